"""The serving artifact: one ``torch.save``d dict that says everything needed to rebuild the model.

{"format": "kyara-model/1", "architecture": str, "num_classes": int, "labels": [slug, ...],
 "input_size": int, "normalization": {"mean": [...], "std": [...]}, "state_dict": {...},
 "metrics": {...}, "calibration": {"temperature": T, ...} | None}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .architectures import architectures

FORMAT = "kyara-model/1"


class ArtifactError(RuntimeError):
    pass


@dataclass
class ServingMeta:
    architecture: str
    labels: list[str]
    input_size: int
    normalization: dict
    metrics: dict
    calibration: dict | None = None  # {"temperature", "split", "images", "ece_before", "ece_after", ...}

    @property
    def temperature(self) -> float:
        return float((self.calibration or {}).get("temperature") or 1.0)


def save_serving_artifact(
    path: Path, *, model: nn.Module, architecture: str, labels: list[str], input_size: int,
    normalization: dict, metrics: dict | None = None, calibration: dict | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "architecture": architecture, "num_classes": len(labels), "labels": list(labels),
                "input_size": int(input_size), "normalization": normalization, "state_dict": state,
                "metrics": metrics or {}, "calibration": calibration}, tmp)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def load_serving_artifact(path: Path) -> tuple[nn.Module, ServingMeta]:
    """Rebuild the model in eval mode on the CPU; ``ArtifactError`` with a reason on any problem."""
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"Artifact {path} is missing.") from None
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"Artifact {path} could not be read: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ArtifactError(f"Artifact {path} is not a {FORMAT} file.")
    try:
        model = architectures.get(blob["architecture"]).build(blob["num_classes"], weights="none")
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"Artifact {path} does not fit its architecture: {exc}") from exc
    model.eval()
    meta = ServingMeta(blob["architecture"], list(blob["labels"]), int(blob["input_size"]),
                       dict(blob["normalization"]), dict(blob.get("metrics", {})),
                       dict(blob["calibration"]) if blob.get("calibration") else None)
    return model, meta
