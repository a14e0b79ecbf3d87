"""Reading the media storage (local disk or S3, whichever ``default_storage`` is) by a stored file's name."""
from __future__ import annotations

from django.core.files.storage import default_storage


def read_stored(name: str) -> bytes:
    """The whole file stored under ``name``. Pass ``functools.partial(read_stored, name)`` where a reader is
    wanted (training samples, a runtime's guard images): the file is then read only when it is used."""
    with default_storage.open(name, "rb") as handle:
        return handle.read()
