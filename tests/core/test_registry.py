import sys

import pytest

from apps.core.plugins import load_entry_points, plugin_failures
from apps.core.registry import Registry, RegistryError


def test_register_and_get_by_name():
    reg = Registry("widget")

    @reg.register("round")
    def round_widget():
        return "round"

    assert reg.get("round") is round_widget
    assert "round" in reg and reg.names() == ["round"]


def test_unknown_name_lists_known_ones():
    reg = Registry("source")
    reg.register("danbooru", object())
    reg.register("safebooru", object())
    with pytest.raises(RegistryError) as err:
        reg.get("pixiv")
    assert str(err.value) == "Unknown source 'pixiv'; known: danbooru, safebooru"


def test_duplicate_names_are_refused():
    reg = Registry("architecture")
    reg.register("simple", lambda: 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("simple", lambda: 2)


def _write_plugin_dist(root, group, entries):
    dist = root / "kyara_fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kyara-fake-plugin\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (dist / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")


def test_entry_point_plugins_load_and_a_broken_one_is_recorded_not_fatal(tmp_path, monkeypatch):
    (tmp_path / "kyara_fake_plugin.py").write_text("def good(**kw):\n    return 'good'\n")
    (tmp_path / "kyara_broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    _write_plugin_dist(tmp_path, "kyara.test_plugins", {
        "good": "kyara_fake_plugin:good",
        "broken": "kyara_broken_plugin:thing",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("test plugin")
    loaded = load_entry_points("kyara.test_plugins", reg)
    assert loaded == ["good"]
    assert reg.get("good")() == "good"
    assert reg.origin("good") == "plugin kyara_fake_plugin:good"
    failures = [f for f in plugin_failures() if f.group == "kyara.test_plugins"]
    assert [f.name for f in failures] == ["broken"]
    assert "boom at import" in failures[0].error
    sys.modules.pop("kyara_fake_plugin", None)


@pytest.mark.django_db
def test_admin_plugin_page_shows_failures_and_registries(admin_client, tmp_path, monkeypatch):
    (tmp_path / "kyara_admin_broken.py").write_text("raise ImportError('missing dependency foo')\n")
    _write_plugin_dist(tmp_path, "kyara.admin_test", {"shaky": "kyara_admin_broken:x"})
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("gadget")
    reg.register("builtin-gadget", object())
    load_entry_points("kyara.admin_test", reg)
    response = admin_client.get("/admin/plugins/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "shaky" in body and "missing dependency foo" in body
    assert "builtin-gadget" in body
    assert "/admin/plugins/" in admin_client.get("/admin/").content.decode()
