"""A per-installation secret key for the embedded path: generated once into KYARA_DATA_DIR.

Never a fixed value in the repository. Every process of one instance (web, qcluster, training
child) reads the same file, which matters because django-q2 signs tasks with SECRET_KEY.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def secret_key_for(data_dir: Path) -> str:
    explicit = os.environ.get("DJANGO_SECRET_KEY")
    if explicit:
        return explicit
    path = data_dir / ".secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()
