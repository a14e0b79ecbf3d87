"""Model architectures by name. No Django here.

Each entry is a factory ``(num_classes, weights) -> nn.Module`` plus what serving needs to know: its
input size and normalization, which travel with every saved model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from apps.core.registry import Registry

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


@register_architecture("mobilenet_v2", weight_choices=("none", "imagenet", "<path>"))
def mobilenet_v2(*, num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision's MobileNetV2 with a new classifier head (transfer learning).

    ``weights``: ``none``; ``imagenet`` (torchvision's weights API, downloads where there is internet);
    or a path to a local file (a torchvision state dict or a Kyara checkpoint).
    """
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


@register_architecture("simple", input_size=128, weight_choices=("none", "<path>"))
def simple(*, num_classes: int, weights: str | None = None) -> nn.Module:
    model = SimpleCNN(num_classes)
    weights = (weights or "none").strip()
    if weights.lower() == "imagenet":
        raise WeightsError("The simple architecture has no ImageNet weights; use --weights none or a local file.")
    if weights.lower() != "none":
        _load_local_weights(model, Path(weights).expanduser(), skip_prefixes=("classifier.",))
    return model


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
