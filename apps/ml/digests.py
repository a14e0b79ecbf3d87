"""Content digests that need neither torch nor Django: a file's sha256 (the registry checks artifacts with
it) and a model's weights digest (the stamp an exported graph carries, so a cached graph is used only for
the weights it was made from)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(state_dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in order (a few ms for MobileNetV2)."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
