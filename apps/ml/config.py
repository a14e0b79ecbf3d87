"""Every hyperparameter of a training run. No Django.

The optimisation values a recipe decides (``apps.ml.recipes``) default to ``None``: "take it from the
recipe". ``resolved(weights_source)`` fills them in once the run knows which weights it starts from;
a value the user gave is never replaced.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .architectures import architectures
from .device import DEVICE_CHOICES, PRECISION_CHOICES
from .recipes import RECIPE_CHOICES, RECIPE_KEYS, RECIPES, recipe_for

OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("cosine", "none")
MONITORS = ("val_accuracy", "val_loss")


class ConfigError(ValueError):
    """A configuration that cannot run; ``problems`` lists every reason, the message joins them.

    ``by_field`` files each reason under the setting it is about, so a form can show it next to that field
    (a reason about no one setting, such as an unknown key, is filed under that key's name all the same).
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = [message for _, message in problems]
        self.by_field: dict[str, list[str]] = {}
        for name, message in problems:
            self.by_field.setdefault(name, []).append(message)
        super().__init__("; ".join(self.problems))


@dataclass
class TrainConfig:
    # Model
    architecture: str = "mobilenet_v2"
    # auto: ImageNet weights where they can be had (KYARA_WEIGHTS_DIR, torchvision's cache, a download),
    # else from scratch; none | imagenet | /path/to/weights.pth ask for one of them outright.
    weights: str = "auto"
    image_size: int = 0  # 0: the architecture's own input size
    recipe: str = "auto"  # auto | finetune | scratch: where the None values below come from
    # Optimisation (the original: batch 32, 100 epochs, Adam lr 1e-4, weight decay 1e-4, cosine annealing)
    epochs: int = 100
    batch_size: int = 32
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    scheduler: str = "cosine"
    warmup_epochs: int | None = None
    min_lr: float = 0.0
    label_smoothing: float | None = None
    class_weighting: float | None = None  # loss weight ∝ (images of the class)^-x: 0 off, 0.5 √, 1 inverse
    ema_decay: float | None = None  # evaluate and keep an exponential moving average of the weights; 0 off
    refit: bool | None = None  # after choosing the epoch count on val, train again on train + val
    # Early stopping (the original: patience 10); 0 turns it off
    patience: int | None = None
    monitor: str = "val_accuracy"
    # Augmentation (the original: random flips, rotations and scaling)
    scale_min: float = 0.6
    hflip: float = 0.5
    rotation: float = 15.0
    color_jitter: float = 0.1
    # Where and how
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: str = "auto"  # auto | on | off
    workers: int = 1  # DataLoader workers; the decoded cache keeps one far ahead of the model
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    seed: int = 0
    extra: dict = field(default_factory=dict)  # free-form notes that travel with the run

    @classmethod
    def from_dict(cls, data: dict | None) -> TrainConfig:
        """Build and validate; unknown keys and bad values are refused with every problem listed."""
        data = dict(data or {})
        known = {f.name: f for f in fields(cls)}
        problems = [(key, f"unknown setting {key!r} (known: {', '.join(sorted(known))})")
                    for key in data if key not in known]
        values = {}
        for key, raw in data.items():
            if key not in known:
                continue
            default = RECIPES["finetune"][key] if key in RECIPE_KEYS else known[key].default
            try:
                values[key] = None if raw is None and key in RECIPE_KEYS else _coerce(raw, default)
            except (TypeError, ValueError):
                problems.append((key, f"{key} must be a {type(default).__name__}, got {raw!r}"))
        config = cls(**values)
        problems += config.field_problems()
        if problems:
            raise ConfigError(problems)
        return config

    def field_problems(self) -> list[tuple[str, str]]:
        """Every reason this config cannot run, as (setting, message)."""
        out: list[tuple[str, str]] = []
        if self.architecture not in architectures:
            out.append(("architecture", f"unknown architecture {self.architecture!r} "
                                        f"(known: {', '.join(architectures.names())})"))
        if self.image_size and not 16 <= self.image_size <= 1024:
            out.append(("image_size", f"image_size must be between 16 and 1024 pixels, got {self.image_size}"))
        if self.epochs < 1:
            out.append(("epochs", f"epochs must be at least 1, got {self.epochs}"))
        if self.batch_size < 1:
            out.append(("batch_size", f"batch_size must be at least 1, got {self.batch_size}"))
        lr = RECIPES["finetune"]["lr"] if self.lr is None else self.lr
        if not 0 < lr < 10:
            out.append(("lr", f"lr must be a positive learning rate below 10, got {lr}"))
        elif self.min_lr < 0 or (self.lr is not None and self.min_lr > self.lr):
            out.append(("min_lr", f"min_lr must be between 0 and lr ({self.lr}), got {self.min_lr}"))
        if self.weight_decay is not None and self.weight_decay < 0:
            out.append(("weight_decay", f"weight_decay cannot be negative, got {self.weight_decay}"))
        if self.warmup_epochs is not None and self.epochs >= 1 and not 0 <= self.warmup_epochs < self.epochs:
            out.append(("warmup_epochs",
                        f"warmup_epochs must be between 0 and epochs - 1, got {self.warmup_epochs}"))
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            out.append(("label_smoothing", f"label_smoothing must be in [0, 1), got {self.label_smoothing}"))
        if self.class_weighting is not None and not 0 <= self.class_weighting <= 1:
            out.append(("class_weighting", f"class_weighting must be in [0, 1], got {self.class_weighting}"))
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            out.append(("ema_decay", f"ema_decay must be in [0, 1), got {self.ema_decay}"))
        if self.patience is not None and self.patience < 0:
            out.append(("patience", f"patience cannot be negative, got {self.patience}"))
        if not 0 < self.scale_min <= 1:
            out.append(("scale_min", f"scale_min must be in (0, 1], got {self.scale_min}"))
        if not 0 <= self.hflip <= 1:
            out.append(("hflip", f"hflip is a probability in [0, 1], got {self.hflip}"))
        if not 0 <= self.rotation <= 180:
            out.append(("rotation", f"rotation must be 0-180 degrees, got {self.rotation}"))
        if not 0 <= self.color_jitter <= 1:
            out.append(("color_jitter", f"color_jitter must be in [0, 1], got {self.color_jitter}"))
        for name in ("workers", "threads"):
            if getattr(self, name) < 0:
                out.append((name, f"{name} cannot be negative, got {getattr(self, name)}"))
        for name, value, choices in (("optimizer", self.optimizer or "adam", OPTIMIZERS),
                                     ("recipe", self.recipe, RECIPE_CHOICES), ("scheduler", self.scheduler, SCHEDULERS),
                                     ("monitor", self.monitor, MONITORS), ("device", self.device, DEVICE_CHOICES),
                                     ("precision", self.precision, PRECISION_CHOICES),
                                     ("channels_last", self.channels_last, ("auto", "on", "off"))):
            if value not in choices and not (name == "device" and str(value).startswith("cuda:")):
                out.append((name, f"{name} must be one of {', '.join(choices)}, got {value!r}"))
        out += self._weights_problems()
        return out

    def _weights_problems(self) -> list[tuple[str, str]]:
        weights = (self.weights or "none").strip()
        if weights.lower() in ("none", "imagenet", "auto"):
            if weights.lower() == "imagenet" and self.architecture in architectures:
                choices = architectures.get(self.architecture).weight_choices
                if "imagenet" not in choices:
                    return [("weights", f"architecture {self.architecture!r} has no ImageNet weights; use none or a "
                             "local file")]
            return []
        if not Path(os.path.expanduser(weights)).is_file():
            return [("weights", f"weights must be auto, none, imagenet or the path of a local file; {weights!r} is "
                     "not a file")]
        return []

    def resolved(self, weights_source: str) -> TrainConfig:
        """Every ``None`` filled from the recipe that fits ``weights_source`` (none | imagenet | file).

        A recipe's warm-up never takes a whole short run: it is cut to ``epochs - 1``.
        """
        recipe = recipe_for(self.recipe, weights_source)
        values = {key: value for key, value in RECIPES[recipe].items() if getattr(self, key) is None}
        if "warmup_epochs" in values:
            values["warmup_epochs"] = min(values["warmup_epochs"], max(self.epochs - 1, 0))
        config = dataclasses.replace(self, recipe=recipe, **values)
        problems = config.field_problems()
        if problems:
            raise ConfigError(problems)
        return config

    def resolved_image_size(self) -> int:
        return self.image_size or architectures.get(self.architecture).input_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(raw, default):
    if isinstance(default, bool):
        if isinstance(raw, str):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return bool(raw)
    if isinstance(default, int):
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError(raw)
        if isinstance(raw, bool):
            raise TypeError(raw)
        return int(raw)
    if isinstance(default, float):
        if isinstance(raw, bool):
            raise TypeError(raw)
        return float(raw)
    if isinstance(default, str):
        if not isinstance(raw, (str, int, float)):
            raise TypeError(raw)
        return str(raw)
    if isinstance(raw, dict):
        return raw
    raise TypeError(raw)
