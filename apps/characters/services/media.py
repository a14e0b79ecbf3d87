"""Media against the database: every image row's file is there and holds the bytes its sha256 names.

``media_check`` lists the rows whose original is missing or not its bytes (size, then sha256) and whose
thumbnail is missing or does not decode. With ``repair``: a thumbnail is made again from a sound original;
an original is restored from any folder or zip in ``sources`` that holds the same bytes; an original
that cannot be restored is rejected with the reason ``file_missing`` (audited like any curation, so a
freeze leaves it out) and a damaged file is deleted, never served or trained on as if whole. Ingesting
the same bytes again later restores the file (``image_ingest``), and a curator can approve it again.

It also lists stray files older than ``grace``: a content-addressed name no row names (an ingest killed
between writing its file and committing its row) and a temporary ``.<name>.*.part`` (a write killed before
its rename); ``repair`` deletes them. The grace (an hour by default) leaves alone the files of ingests still
running, which write the file a moment before the row.
"""
from __future__ import annotations

import hashlib
import io
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from apps.core.storage import read_stored

from ..imaging import ImageRejected, decode_image, make_thumbnail
from ..models import Image
from .curation import image_reject
from .ingest import _store, _write_atomically, media_path, stored_matches

MISSING, WRONG_SIZE, WRONG_HASH = "missing", "wrong_size", "wrong_hash"
THUMB_MISSING, THUMB_BROKEN = "thumbnail_missing", "thumbnail_broken"
ORPHAN, TEMPORARY = "orphan", "temporary"
MEDIA_PREFIXES = ("images", "thumbs")
STRAY_GRACE_SECONDS = 3600.0
_FINAL_NAME = re.compile(r"^(?P<sha>[0-9a-f]{64})\.[a-z0-9]+$")
_TEMPORARY_NAME = re.compile(r"^\.[0-9a-f]{64}\.[a-z0-9]+\..*\.part$")  # _write_atomically's mkstemp name


@dataclass
class MediaProblem:
    image_id: int
    path: str
    problem: str
    repaired: str = ""  # what --repair did: restored, thumbnail_made, rejected (or "" when nothing could be done)

    def as_dict(self) -> dict:
        return {"image": self.image_id, "path": self.path, "problem": self.problem, "repaired": self.repaired}


@dataclass
class StrayFile:
    path: str
    kind: str  # orphan (a final name no row names) or temporary (a write that never reached its rename)
    age_seconds: float
    removed: bool = False

    def as_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "age_seconds": round(self.age_seconds), "removed": self.removed}


@dataclass
class MediaReport:
    checked: int = 0
    problems: list[MediaProblem] = field(default_factory=list)
    known_missing: int = 0  # rows already rejected as file_missing whose file is still gone: no new problem
    strays: list[StrayFile] = field(default_factory=list)

    @property
    def unresolved(self) -> list[MediaProblem | StrayFile]:
        return [p for p in self.problems if not p.repaired] + [s for s in self.strays if not s.removed]

    def as_dict(self) -> dict:
        return {"checked": self.checked, "problems": [p.as_dict() for p in self.problems],
                "strays": [s.as_dict() for s in self.strays], "unresolved": len(self.unresolved),
                "known_missing": self.known_missing}


def _original_problem(image: Image, *, quick: bool) -> str:
    path = image.file.name
    try:
        if not default_storage.exists(path):
            return MISSING
        if default_storage.size(path) != image.bytes:
            return WRONG_SIZE
    except OSError:
        return MISSING
    if not quick and not stored_matches(path, size=image.bytes, sha256=image.sha256):
        return WRONG_HASH
    return ""


def _thumbnail_problem(image: Image) -> str:
    if not image.thumbnail:
        return THUMB_MISSING
    try:
        if not default_storage.exists(image.thumbnail):
            return THUMB_MISSING
        PILImage.open(io.BytesIO(read_stored(image.thumbnail))).verify()
    except Exception:  # noqa: BLE001 - any failure to read or decode means it must be made again
        return THUMB_BROKEN
    return ""


def _candidates(sources: list[Path], wanted: dict[int, set[str]]) -> Iterator[tuple[str, bytes]]:
    """(sha256, bytes) of the files in ``sources`` whose size is one of the wanted ones (the rest is not read)."""
    for source in sources:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                for info in archive.infolist():
                    if not info.is_dir() and info.file_size in wanted:
                        data = archive.read(info)
                        yield hashlib.sha256(data).hexdigest(), data
        elif source.is_dir():
            for path in source.rglob("*"):
                if path.is_file() and path.stat().st_size in wanted:
                    data = path.read_bytes()
                    yield hashlib.sha256(data).hexdigest(), data
        else:
            raise FileNotFoundError(f"{source} is neither a folder nor a zip file")


def _restore(broken: dict[str, tuple[Image, MediaProblem]], sources: list[Path]) -> None:
    wanted: dict[int, set[str]] = {}
    for sha, (image, _) in broken.items():
        wanted.setdefault(image.bytes, set()).add(sha)
    for sha, data in _candidates(sources, wanted):
        if sha in broken and not broken[sha][1].repaired:
            image, problem = broken[sha]
            _write_atomically(image.file.name, data)
            problem.repaired = "restored"


def _make_thumbnail(image: Image) -> bool:
    try:
        decoded = decode_image(read_stored(image.file.name), max_pixels=settings.KYARA_MAX_IMAGE_PIXELS, min_side=1)
    except ImageRejected:
        return False
    path = _store(media_path(image.sha256, "webp", prefix="thumbs"),
                  make_thumbnail(decoded.rgb, settings.KYARA_THUMBNAIL_SIZE))
    if image.thumbnail != path:
        Image.objects.filter(pk=image.pk).update(thumbnail=path)
    return True


def _walk(folder: str) -> Iterator[tuple[str, list[str]]]:
    """(folder, file names) for ``folder`` and every folder below it, through the storage API (disk or S3)."""
    try:
        folders, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    yield folder, files
    for name in folders:
        yield from _walk(f"{folder}/{name}")


def _age(path: str, now: float) -> float:
    try:
        return now - default_storage.get_modified_time(path).timestamp()
    except (FileNotFoundError, OSError):
        return -1.0  # gone meanwhile: not a stray


def _named_by_rows(shas: set[str]) -> set[str]:
    named: set[str] = set()
    for file, thumbnail in Image.objects.filter(sha256__in=shas).values_list("file", "thumbnail"):
        named.update((file, thumbnail))
    return named


def _strays(grace: float) -> Iterator[StrayFile]:
    """Files under the media prefixes, older than ``grace`` seconds, that no row names or that are temporary."""
    now = time.time()
    for prefix in MEDIA_PREFIXES:
        for folder, files in _walk(prefix):
            finals = {f"{folder}/{name}": match["sha"] for name in files if (match := _FINAL_NAME.match(name))}
            named = _named_by_rows(set(finals.values())) if finals else set()
            for name in files:
                path = f"{folder}/{name}"
                kind = TEMPORARY if _TEMPORARY_NAME.match(name) else ORPHAN if path in finals and path not in named else ""
                if kind and (age := _age(path, now)) >= grace:
                    yield StrayFile(path, kind, age)


def _remove_stray(stray: StrayFile, grace: float) -> bool:
    # Looked at again just before the delete: an ingest of the same bytes may have adopted the file meanwhile.
    if _age(stray.path, time.time()) < grace:
        return False
    if stray.kind == ORPHAN and stray.path in _named_by_rows({_FINAL_NAME.match(stray.path.rsplit("/", 1)[1])["sha"]}):
        return False
    default_storage.delete(stray.path)
    return True


def media_check(*, repair: bool = False, sources: list[str | Path] | None = None, quick: bool = False,
                actor=None, grace: float = STRAY_GRACE_SECONDS) -> MediaReport:
    """Check every image row's files and look for stray files older than ``grace`` seconds (see the module);
    ``quick`` compares sizes only, not hashes."""
    report = MediaReport()
    broken: dict[str, tuple[Image, MediaProblem]] = {}
    thumbnails: list[tuple[Image, MediaProblem]] = []
    for image in Image.objects.only("id", "sha256", "file", "thumbnail", "bytes", "status", "reason").iterator(chunk_size=500):
        report.checked += 1
        problem = _original_problem(image, quick=quick)
        if problem == MISSING and image.status == Image.Status.REJECTED and image.reason == "file_missing":
            report.known_missing += 1
            continue
        if problem:
            entry = MediaProblem(image.pk, image.file.name, problem)
            report.problems.append(entry)
            broken[image.sha256] = (image, entry)
        thumb_problem = _thumbnail_problem(image)
        if thumb_problem:
            entry = MediaProblem(image.pk, image.thumbnail, thumb_problem)
            report.problems.append(entry)
            thumbnails.append((image, entry))
    report.strays = list(_strays(grace))
    if not repair:
        return report
    for stray in report.strays:
        stray.removed = _remove_stray(stray, grace)
    if sources and broken:
        _restore(broken, [Path(s) for s in sources])
    lost = [(image, problem) for image, problem in broken.values() if not problem.repaired]
    for image, problem in lost:
        if problem.problem != MISSING:
            default_storage.delete(image.file.name)  # not the bytes it names: never serve or train on it
        problem.repaired = "rejected"
    if lost:
        image_reject(image_ids=[image.pk for image, _ in lost], reason="file_missing", actor=actor)
    lost_ids = {image.pk for image, _ in lost}
    for image, problem in thumbnails:
        if image.pk not in lost_ids and _make_thumbnail(image):
            problem.repaired = "thumbnail_made"
    return report
