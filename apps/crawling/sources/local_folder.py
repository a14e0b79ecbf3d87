"""A folder of images on this machine, below ``KYARA_CRAWL_LOCAL_ROOT`` (or the root override)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from .base import Candidate, Source
from .http import FetchError, Politeness

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


def post_id_for(text: str) -> str:
    """An identifier that fits Image.source_post_id: the text itself, or a hash when too long."""
    return text if len(text) <= 100 else "sha1:" + hashlib.sha1(text.encode()).hexdigest()


def resolve_below(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that escapes ``root`` (``..``, absolute paths, links)."""
    root = root.resolve()
    target = (root / relative.strip().lstrip("/")).resolve()
    if target != root and root not in target.parents:
        raise FetchError("outside_root", f"{relative!r} is outside the crawl folder {root}")
    return target


class LocalFolderSource(Source):
    description = "Image files in a folder below KYARA_CRAWL_LOCAL_ROOT (query: the sub-folder)"
    politeness = Politeness(rate=0.0, concurrency=4)  # rate 0: no spacing, it is a disk
    listing = "finite"
    settings_schema: dict[str, str] = {}

    @property
    def folder_root(self) -> Path:
        root = self.root[len("file://"):] if self.root.startswith("file://") else self.root
        return Path(root or settings.KYARA_CRAWL_LOCAL_ROOT)

    def list(self, query: str, *, before: int | None = None) -> Iterator[list[Candidate]]:
        root = self.folder_root.resolve()
        folder = resolve_below(root, query or ".")
        if not folder.is_dir():
            raise FetchError("not_found", f"No folder {folder}")
        page: list[Candidate] = []
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            relative = path.relative_to(root).as_posix()
            page.append(Candidate(post_id=post_id_for(relative), url=path.as_uri(), extra={"relative": relative}))
            if len(page) >= self.page_size:
                yield page
                page = []
        if page:
            yield page

    def fetch(self, candidate: Candidate) -> bytes:
        path = resolve_below(self.folder_root, candidate.extra["relative"])  # a link may not lead outside
        limit = settings.KYARA_CRAWL_MAX_BYTES
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise FetchError("too_large", f"{path} is over the limit of {limit:,} bytes")
        return data


def register(registry) -> None:
    registry.register("local_folder", LocalFolderSource)
