"""Model architectures by name. No Django here.

Each entry is a factory ``(num_classes, weights) -> nn.Module`` plus what serving needs to know: its
input size and normalization, which travel with every saved model.

The registry is read at Django start-up (training's settings, forms and plugin discovery); torch is
imported only when a model is built or weights are read, so a process that never does pays nothing.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from apps.core.registry import Registry

from .digests import file_sha256

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """Pretrained weights could not be had; the message says what to do instead."""


@dataclass(frozen=True)
class Architecture:
    name: str
    factory: object  # Callable[[int, str | None], nn.Module]
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    weight_choices: tuple[str, ...] = field(default=("none",))
    imagenet_url: str = ""  # torchvision's file; its name carries the first hex digits of its sha256

    @property
    def imagenet_file(self) -> str:
        return self.imagenet_url.rsplit("/", 1)[-1]

    @property
    def normalization(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    def build(self, num_classes: int, weights: str | None = None) -> nn.Module:
        return self.factory(num_classes=num_classes, weights=weights)


architectures: Registry[Architecture] = Registry("architecture")


def register_architecture(name: str, **info):
    def _wrap(factory):
        architectures.register(name, Architecture(name=name, factory=factory, **info))
        return factory

    return _wrap


def _load_local_weights(model: nn.Module, path: Path, *, skip_prefixes: tuple[str, ...]) -> None:
    """Load a state dict (or a checkpoint holding one) from a local file, leaving the new head alone."""
    import torch

    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"Weights file {path} could not be read: {exc}") from exc
    state = blob.get("state_dict", blob.get("model", blob)) if isinstance(blob, dict) else blob
    if not isinstance(state, dict):
        raise WeightsError(f"Weights file {path} holds no state dict.")
    own = model.state_dict()
    usable = {k: v for k, v in state.items()
              if k in own and not k.startswith(skip_prefixes) and own[k].shape == v.shape}
    if not usable:
        raise WeightsError(f"Weights file {path} matches no layer of this architecture.")
    missing = [k for k in own if k not in usable and not k.startswith(skip_prefixes)]
    if missing:
        logger.warning("Weights file %s lacks %d tensors (e.g. %s); they keep their initial values",
                       path, len(missing), missing[0])
    model.load_state_dict(usable, strict=False)


@register_architecture("mobilenet_v2", weight_choices=("none", "imagenet", "<path>"),
                       imagenet_url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth")
def mobilenet_v2(*, num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision's MobileNetV2 with a new classifier head (transfer learning).

    ``weights``: ``none``; ``imagenet`` (torchvision's weights API, downloads where there is internet);
    or a path to a local file (a torchvision state dict or a Kyara checkpoint).
    """
    from torch import nn
    from torchvision.models import MobileNet_V2_Weights
    from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

    weights = (weights or "none").strip()
    if weights.lower() == "imagenet":
        try:
            model = tv_mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
        except Exception as exc:  # noqa: BLE001 - no network, a proxy, a corrupt cache...
            raise WeightsError(
                f"ImageNet weights for mobilenet_v2 could not be downloaded ({exc}). Use --weights none, "
                "or download them where there is internet and pass --weights /path/to/mobilenet_v2.pth."
            ) from exc
    else:
        model = tv_mobilenet_v2(weights=None)
        if weights.lower() != "none":
            _load_local_weights(model, Path(weights).expanduser(), skip_prefixes=("classifier.",))
    in_features = model.classifier[-1].in_features
    model.classifier[-1] = nn.Linear(in_features, num_classes)
    return model


@functools.cache
def simple_cnn_class():
    """``SimpleCNN``, defined on first use (it subclasses torch's ``nn.Module``)."""
    import torch
    from torch import nn

    class SimpleCNN(nn.Module):
        """A small CNN: four conv blocks and a linear head. Fast to train, a baseline."""

        def __init__(self, num_classes: int, width: int = 32) -> None:
            super().__init__()
            layers = []
            channels = 3
            for out in (width, width * 2, width * 4, width * 8):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                           nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                channels = out
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(channels, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    return SimpleCNN


@register_architecture("simple", input_size=128, weight_choices=("none", "<path>"))
def simple(*, num_classes: int, weights: str | None = None) -> nn.Module:
    model = simple_cnn_class()(num_classes)
    weights = (weights or "none").strip()
    if weights.lower() == "imagenet":
        raise WeightsError("The simple architecture has no ImageNet weights; use --weights none or a local file.")
    if weights.lower() != "none":
        _load_local_weights(model, Path(weights).expanduser(), skip_prefixes=("classifier.",))
    return model


# --- Which weights a run starts from -----------------------------------------------------------------

@dataclass(frozen=True)
class WeightsChoice:
    spec: str  # what ``Architecture.build`` gets: none | imagenet | /path/to/file
    source: str  # what a person reads: none | imagenet | the file's path
    reason: str


def torchvision_cache_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha_prefix_ok(path: Path, file_name: str) -> bool:
    """torchvision names its files ``<name>-<first hex digits of the sha256>.pth``."""
    prefix = file_name.rsplit("-", 1)[-1].split(".", 1)[0]
    return file_sha256(path).startswith(prefix)


def _require_imagenet(arch: Architecture) -> None:
    if not arch.imagenet_url:
        raise WeightsError(f"Architecture {arch.name!r} has no ImageNet weights.")


def _place_weights(arch: Architecture, folder: Path, fill: Callable[[Path], None]) -> Path:
    """Put the architecture's file into ``folder`` under torchvision's name, atomically: ``fill`` writes (and
    checks) a temporary file beside it, renamed only when ``fill`` returns; a failure leaves nothing behind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / arch.imagenet_file
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        fill(tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def download_imagenet(arch: Architecture, folder: Path, *, timeout: float = 30.0) -> Path:
    """Fetch the architecture's ImageNet file into ``folder`` (checked against the hash in its name)."""
    _require_imagenet(arch)

    def fetch(tmp: Path) -> None:
        try:
            with urllib.request.urlopen(arch.imagenet_url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except OSError as exc:
            raise WeightsError(f"ImageNet weights could not be downloaded from {arch.imagenet_url}: {exc}") from exc
        if not sha_prefix_ok(tmp, arch.imagenet_file):
            raise WeightsError(f"The file downloaded from {arch.imagenet_url} does not match its published hash.")

    return _place_weights(arch, folder, fetch)


def import_imagenet_file(arch: Architecture, source: Path, folder: Path) -> Path:
    """Copy a file fetched elsewhere into ``folder`` under torchvision's name, once its hash checks out."""
    source = Path(source)
    _require_imagenet(arch)
    if not source.is_file():
        raise WeightsError(f"{source} is not a file.")
    if not sha_prefix_ok(source, arch.imagenet_file):
        raise WeightsError(f"{source} is not {arch.imagenet_file}: its sha256 does not start with the digits in "
                           "that name. Download it again from " + arch.imagenet_url)
    return _place_weights(arch, folder, lambda tmp: shutil.copyfile(source, tmp))


def choose_weights(architecture: str, requested: str, *, weights_dir: Path | None = None, download: bool = False,
                   timeout: float = 30.0) -> WeightsChoice:
    """Decide the starting weights of a run; ``auto`` never fails: it says why it trains from scratch.

    ``auto`` looks, in order, in ``weights_dir`` (``<architecture>.pth`` or torchvision's file name, as
    ``manage.py fetch_weights`` leaves it), in torchvision's own cache, then downloads when allowed.
    """
    arch = architectures.get(architecture)
    requested = (requested or "auto").strip()
    if requested.lower() == "none":
        return WeightsChoice("none", "none", "asked for: weights none")
    if requested.lower() not in ("auto", "imagenet"):
        return WeightsChoice(requested, f"file {Path(requested).name}", "asked for: a local weights file")
    if not arch.imagenet_url:
        if requested.lower() == "imagenet":
            raise WeightsError(f"Architecture {arch.name!r} has no ImageNet weights; use none or a local file.")
        return WeightsChoice("none", "none", f"{arch.name} has no ImageNet weights, so it trains from scratch")
    if weights_dir:
        for name in (f"{arch.name}.pth", arch.imagenet_file):
            path = Path(weights_dir) / name
            if path.is_file():
                return WeightsChoice(str(path), f"file {name}", f"ImageNet weights from {name} in the weights folder")
    if (torchvision_cache_dir() / arch.imagenet_file).is_file():
        return WeightsChoice("imagenet", "imagenet", "ImageNet weights from torchvision's cache")
    if requested.lower() == "imagenet":
        return WeightsChoice("imagenet", "imagenet", "asked for: weights imagenet (torchvision downloads them)")
    looked = "not in the weights folder" if weights_dir else "no weights folder set"
    if not download:
        return WeightsChoice("none", "none", f"no ImageNet weights here ({looked}, not in torchvision's cache, "
                                             "downloads off), so it trains from scratch; "
                                             "`manage.py fetch_weights` puts them where a run finds them")
    try:
        download_imagenet(arch, torchvision_cache_dir(), timeout=timeout)
    except WeightsError as exc:
        return WeightsChoice("none", "none", f"no ImageNet weights here ({looked}, not in torchvision's cache) and "
                                             f"the download failed ({exc}), so it trains from scratch")
    return WeightsChoice("imagenet", "imagenet", "ImageNet weights downloaded into torchvision's cache")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def discover_plugins() -> None:
    """Architectures from pip-installed packages (entry point group ``kyara.architectures``).

    An entry point names a factory ``(num_classes, weights) -> nn.Module`` or an ``Architecture``.
    """
    from apps.core.plugins import load_entry_points

    staging: Registry = Registry("architecture")
    for name in load_entry_points("kyara.architectures", staging):
        obj = staging.get(name)
        if name in architectures:
            continue
        architectures.register(
            name, obj if isinstance(obj, Architecture) else Architecture(name=name, factory=obj),
            origin=staging.origin(name),
        )
