"""A checkpoint is one dict: model, optimizer, scheduler, epoch, config, class names. No Django."""
from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = "kyara-checkpoint/1"
LAST = "last.pt"
BEST = "best.pt"


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path: Path, state: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    tmp.replace(path)  # atomic: a process killed mid-save leaves the previous checkpoint intact
    return path


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}; the run never finished an epoch, start it afresh.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"Checkpoint {path} could not be read: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file.")
    return state
