from importlib.metadata import EntryPoint

import pytest

from apps.ml.architectures import architectures, discover_plugins
from apps.ml.config import TrainConfig


def tiny_factory(*, num_classes, weights=None):
    import torch

    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))


@pytest.fixture
def plugin_entry_points(monkeypatch):
    points = [EntryPoint("tiny_plugin", f"{__name__}:tiny_factory", "kyara.architectures"),
              EntryPoint("broken_plugin", "no_such_module:factory", "kyara.architectures")]
    monkeypatch.setattr("apps.core.plugins.entry_points", lambda group: [p for p in points if p.group == group])
    yield
    architectures.unregister("tiny_plugin")


def broken_plugin_failures():
    from apps.core.plugins import plugin_failures

    return [f for f in plugin_failures() if f.group == "kyara.architectures" and f.name == "broken_plugin"]


def test_an_installed_architecture_plugin_is_found_and_a_broken_one_is_not_fatal(plugin_entry_points):
    discover_plugins()
    assert "tiny_plugin" in architectures and "broken_plugin" not in architectures
    assert architectures.origin("tiny_plugin").startswith("plugin")
    config = TrainConfig.from_dict({"architecture": "tiny_plugin"})
    assert config.resolved_image_size() == 224  # an architecture without its own says the default
    # The broken one is recorded, with what it pointed at and why it failed, once however often discovery runs.
    discover_plugins()
    (failure,) = broken_plugin_failures()
    assert failure.target == "no_such_module:factory"
    assert failure.error.startswith("ModuleNotFoundError") and "no_such_module" in failure.traceback


@pytest.mark.django_db
def test_the_broken_plugin_is_shown_in_the_admin(plugin_entry_points, admin_client):
    discover_plugins()
    assert broken_plugin_failures()
    page = admin_client.get("/admin/plugins/").content.decode()
    assert "failed to load" in page and "broken_plugin" in page and "no_such_module:factory" in page
    assert "tiny_plugin" in page  # and the plugin that loaded, with its origin
