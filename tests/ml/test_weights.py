"""Which weights a run starts from (``weights: auto``) and which recipe follows from them."""
from __future__ import annotations

import dataclasses
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from apps.ml.architectures import (
    WeightsError,
    architectures,
    choose_weights,
    download_imagenet,
    import_imagenet_file,
    torchvision_cache_dir,
)
from apps.ml.config import ConfigError, TrainConfig
from apps.ml.recipes import RECIPES


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """torchvision's cache, empty and private to the test."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


def _weights_file(tmp_path, *, corrupt: bool = False) -> tuple[bytes, str]:
    """A real MobileNetV2 state dict, and the torchvision-style name its sha256 gives it."""
    path = tmp_path / "made.pth"
    torch.save(architectures.get("mobilenet_v2").build(1000, weights="none").state_dict(), path)
    data = path.read_bytes()
    name = f"mobilenet_v2-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    return (data[:-10] + b"0" * 10 if corrupt else data), name


@pytest.fixture
def weights_server(tmp_path):
    """A real HTTP server on 127.0.0.1 that serves files from a dict, counting requests."""
    files: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files, hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def local_arch(weights_server, tmp_path):
    """mobilenet_v2 whose ImageNet file is published by the local server."""
    root, files, hits = weights_server
    data, name = _weights_file(tmp_path)
    files[name] = data
    arch = dataclasses.replace(architectures.get("mobilenet_v2"), name="mobilenet_v2_local",
                               imagenet_url=f"{root}/{name}")
    architectures.register(arch.name, arch)
    yield arch, hits, data
    architectures.unregister(arch.name)


def test_auto_without_weights_anywhere_trains_from_scratch_and_says_why(torch_home, tmp_path):
    choice = choose_weights("mobilenet_v2", "auto", weights_dir=tmp_path / "nothing", download=False)
    assert (choice.spec, choice.source) == ("none", "none")
    assert "from scratch" in choice.reason and "fetch_weights" in choice.reason
    assert choose_weights("simple", "auto").reason == "simple has no ImageNet weights, so it trains from scratch"


def test_auto_prefers_the_weights_folder_then_torchvisions_cache(torch_home, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (torchvision_cache_dir()).mkdir(parents=True)
    (torchvision_cache_dir() / architectures.get("mobilenet_v2").imagenet_file).write_bytes(b"x")
    assert choose_weights("mobilenet_v2", "auto", weights_dir=folder).spec == "imagenet"
    (folder / "mobilenet_v2.pth").write_bytes(b"x")
    choice = choose_weights("mobilenet_v2", "auto", weights_dir=folder)
    assert choice.spec == str(folder / "mobilenet_v2.pth") and choice.source == "file mobilenet_v2.pth"
    assert str(tmp_path) not in choice.reason  # no server path in what the job page shows


def test_auto_downloads_when_allowed_and_checks_the_published_hash(local_arch, torch_home, tmp_path):
    arch, hits, _data = local_arch
    choice = choose_weights(arch.name, "auto", weights_dir=tmp_path / "empty", download=True)
    assert choice.spec == "imagenet" and "downloaded" in choice.reason and len(hits) == 1
    assert (torchvision_cache_dir() / arch.imagenet_file).is_file()
    again = choose_weights(arch.name, "auto", weights_dir=tmp_path / "empty", download=True)
    assert again.reason == "ImageNet weights from torchvision's cache" and len(hits) == 1  # not fetched twice


def test_a_failed_download_falls_back_to_scratch_with_the_reason(weights_server, torch_home, tmp_path):
    root, files, _hits = weights_server
    data, name = _weights_file(tmp_path, corrupt=True)
    files[name] = data  # served, but its bytes do not match the hash in its name
    arch = dataclasses.replace(architectures.get("mobilenet_v2"), name="mobilenet_v2_bad",
                               imagenet_url=f"{root}/{name}")
    architectures.register(arch.name, arch)
    try:
        choice = choose_weights(arch.name, "auto", download=True)
        assert choice.spec == "none" and "does not match its published hash" in choice.reason
        assert not (torchvision_cache_dir() / name).exists()  # nothing half-written is left to be trusted
        missing = dataclasses.replace(arch, imagenet_url=f"{root}/missing-12345678.pth")
        with pytest.raises(WeightsError, match="could not be downloaded"):
            download_imagenet(missing, tmp_path / "w")
    finally:
        architectures.unregister(arch.name)


def test_a_file_fetched_elsewhere_is_checked_before_it_is_kept(local_arch, tmp_path):
    arch, _hits, good = local_arch
    (tmp_path / "ok.pth").write_bytes(good)
    kept = import_imagenet_file(arch, tmp_path / "ok.pth", tmp_path / "weights")
    assert kept.name == arch.imagenet_file and kept.read_bytes() == good
    (tmp_path / "bad.pth").write_bytes(good[:-1])
    with pytest.raises(WeightsError, match="sha256"):
        import_imagenet_file(arch, tmp_path / "bad.pth", tmp_path / "other")
    assert not (tmp_path / "other" / arch.imagenet_file).exists()


def test_the_recipe_follows_the_weights_and_the_user_overrides_each_value():
    config = TrainConfig.from_dict({"epochs": 30})
    assert config.weights == "auto" and config.lr is None
    scratch = config.resolved("none")
    assert scratch.recipe == "scratch" and scratch.lr == RECIPES["scratch"]["lr"] and scratch.refit is True
    finetune = config.resolved("imagenet")
    assert finetune.recipe == "finetune" and finetune.lr == 1e-4 and finetune.optimizer == "adam"
    assert finetune.patience == 10 and finetune.refit is False
    mine = TrainConfig.from_dict({"epochs": 30, "lr": 0.01, "refit": "false"}).resolved("none")
    assert mine.lr == 0.01 and mine.refit is False and mine.optimizer == "adamw"
    forced = TrainConfig.from_dict({"recipe": "finetune"}).resolved("none")
    assert forced.recipe == "finetune" and forced.lr == 1e-4
    assert TrainConfig.from_dict({"epochs": 1}).resolved("none").warmup_epochs == 0  # a recipe never eats a short run
    with pytest.raises(ConfigError, match="recipe must be one of"):
        TrainConfig.from_dict({"recipe": "fast"})
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig.from_dict({"ema_decay": 1.5})


def test_fetch_weights_command_downloads_or_copies_and_refuses_a_wrong_file(local_arch, tmp_path):
    from io import StringIO

    from django.core.management import CommandError, call_command

    arch, hits, data = local_arch
    out = StringIO()
    call_command("fetch_weights", "--arch", arch.name, "--dir", str(tmp_path / "w1"), stdout=out)
    assert (tmp_path / "w1" / arch.imagenet_file).read_bytes() == data and len(hits) == 1
    assert "weights auto starts from them" in out.getvalue()
    (tmp_path / "copy.pth").write_bytes(data)
    call_command("fetch_weights", "--arch", arch.name, "--from", str(tmp_path / "copy.pth"), "--dir",
                 str(tmp_path / "w2"), stdout=StringIO())
    assert (tmp_path / "w2" / arch.imagenet_file).is_file() and len(hits) == 1  # copied, not downloaded
    (tmp_path / "wrong.pth").write_bytes(data + b"!")
    with pytest.raises(CommandError, match="sha256"):
        call_command("fetch_weights", "--arch", arch.name, "--from", str(tmp_path / "wrong.pth"), "--dir",
                     str(tmp_path / "w3"), stdout=StringIO())
    with pytest.raises(CommandError, match="nope"):
        call_command("fetch_weights", "--arch", "nope", stdout=StringIO())
