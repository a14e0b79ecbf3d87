"""Import a folder or zip in the original layout ``<series>_<character>/<files>``."""
from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings

from apps.core.api import ServiceError

from ..models import Character, Image, Series
from .curation import character_get_or_create, series_get_or_create
from .ingest import awaits_review, image_ingest, suggestions_request

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".jfif"}
# What reading one damaged entry of a readable zip raises (a bad CRC, a broken deflate stream, a cut-off member).
CORRUPT_ENTRY_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)


class ArchiveError(ServiceError):
    """A zip that is refused whole, before any of it is imported."""


@dataclass
class ImportSummary:
    new: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0  # new images kept in a near-duplicate group
    refused: Counter = field(default_factory=Counter)
    skipped_files: int = 0  # files that are not images by name (metadata.csv, .DS_Store, ...)
    folders: int = 0
    series_created: int = 0
    characters_created: int = 0
    stopped: bool = False  # asked to stop before the last file: what came before it is imported

    def as_dict(self) -> dict:
        return {
            "stopped": self.stopped,
            "new": self.new,
            "exact_duplicates": self.exact_duplicates,
            "near_duplicates": self.near_duplicates,
            "refused": dict(self.refused),
            "refused_total": sum(self.refused.values()),
            "skipped_files": self.skipped_files,
            "folders": self.folders,
            "series_created": self.series_created,
            "characters_created": self.characters_created,
            "series": Series.objects.count(),
            "characters": Character.objects.count(),
            "images": Image.objects.count(),
        }


def split_folder_names(names: list[str], known_series: set[str]) -> dict[str, tuple[str, str]]:
    """Map each ``<series>_<character>`` folder name to (series slug, character name).

    A folder that starts with a known series slug and an underscore belongs to that series (longest
    match wins), so ``honkai_star_rail_丹恒`` lands in ``honkai_star_rail`` once it is known. Otherwise
    the folders that share a first word are read together: their longest common run of words becomes
    the series when at least two folders share it and each keeps a name (so ``genshin_impact_胡桃`` and
    ``genshin_impact_甘雨`` give ``genshin_impact``); a lone folder splits at its first underscore.
    """
    result: dict[str, tuple[str, str]] = {}
    pending: dict[str, list[str]] = {}
    for name in names:
        match = max((s for s in known_series if name.startswith(s + "_") and len(name) > len(s) + 1), key=len, default=None)
        if match:
            result[name] = (match, name[len(match) + 1 :])
        elif "_" in name:
            pending.setdefault(name.split("_", 1)[0], []).append(name)
        else:
            result[name] = (name, name)
    for group in pending.values():
        words = [n.split("_") for n in group]
        common = 1
        if len(group) >= 2:
            shortest = min(len(w) for w in words)
            while common < shortest - 1 and len({tuple(w[: common + 1]) for w in words}) == 1:
                common += 1
        for name, parts in zip(group, words, strict=True):
            result[name] = ("_".join(parts[:common]), "_".join(parts[common:]))
    return result


@dataclass(frozen=True)
class Entry:
    """One file to import: where it goes, how big it says it is, and how to open it (read lazily, bounded)."""

    folder: str
    filename: str
    size: int
    open: Callable[[], BinaryIO]


def _iter_folder(root: Path) -> Iterator[Entry]:
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                yield Entry(folder.name, path.name, path.stat().st_size, lambda path=path: path.open("rb"))


def _iter_zip(archive: zipfile.ZipFile) -> Iterator[Entry]:
    infos = [i for i in archive.infolist() if not i.is_dir()]
    # Accept both "<class>/<file>" and "<top>/<class>/<file>" (a zipped folder).
    parts = [PurePosixPath(i.filename).parts for i in infos]
    tops = {p[0] for p in parts if len(p) >= 3}
    strip = 1 if tops and len(tops) == 1 and all(len(p) >= 3 for p in parts if not p[-1].startswith(".")) else 0
    for info, p in sorted(zip(infos, parts, strict=True), key=lambda x: x[0].filename):
        p = p[strip:]
        if len(p) < 2 or p[0].startswith(".") or p[0] == "__MACOSX":
            continue
        # The size is the archive's word for it; ingest still reads at most one byte past the limit.
        yield Entry(p[0], p[-1], info.file_size, lambda info=info: archive.open(info))


def _climbs_out(name: str) -> bool:
    """An entry name that would leave the archive's folder if written out: ``../``, an absolute path, a drive."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and (parts[0] == "/" or parts[0].endswith(":") or ".." in parts)


def _zip_entries(path: Path) -> list[Entry]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArchiveError("corrupt_archive", f"{path.name} is not a readable zip file ({exc}); nothing was "
                           "imported.") from None
    unsafe = [info.filename for info in archive.infolist() if _climbs_out(info.filename)]
    if unsafe:
        archive.close()
        raise ArchiveError("unsafe_archive", f"{len(unsafe)} entries of {path.name} point outside the archive's "
                           f"folder ({', '.join(unsafe[:3])}); nothing was imported.", entries=unsafe[:20])
    entries = list(_iter_zip(archive))
    if not entries:
        archive.close()
        raise ArchiveError("empty_archive", f"{path.name} holds no file in the <series>_<character>/<image> layout; "
                           "nothing was imported.")
    return entries


def _entries(path: Path) -> list[Entry]:
    if zipfile.is_zipfile(path):
        return _zip_entries(path)
    if path.is_dir():
        return list(_iter_folder(path))
    raise FileNotFoundError(f"{path} is neither a folder nor a zip file")


def archive_check(path: str | Path) -> int:
    """The number of files a zip would import. Raises ``ArchiveError`` (nothing read or imported) for a file
    that is not a readable zip, one with an entry that climbs out of its folder and one with nothing in the
    ``<series>_<character>/<file>`` layout."""
    return len(_zip_entries(Path(path)))


def count_entries(path: str | Path) -> int:
    return len(_entries(Path(path)))


def images_import(
    *, path: str | Path, status: str | None = None, progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> ImportSummary:
    """Import every image under ``path`` (a folder or a .zip). Running it again adds nothing. ``stop`` is asked
    before each file: once it says yes, the import ends there (``stopped``), each file before it whole."""
    path = Path(path)
    summary = ImportSummary()
    entries = _entries(path)
    folders = sorted({entry.folder for entry in entries})
    summary.folders = len(folders)
    mapping = split_folder_names(folders, set(Series.objects.values_list("slug", flat=True)))
    characters: dict[str, Character] = {}
    series_before, characters_before = Series.objects.count(), Character.objects.count()
    for folder in folders:
        series_slug, character_name = mapping[folder]
        series = series_get_or_create(slug=series_slug)
        characters[folder] = character_get_or_create(series=series, name=character_name)
    summary.series_created = Series.objects.count() - series_before
    summary.characters_created = Character.objects.count() - characters_before
    max_bytes = settings.KYARA_MAX_IMAGE_BYTES
    waiting: list[int] = []  # new images a person must review: the model's suggestions are asked for them
    approved_any = False  # new images stored approved: the galleries take them in
    for entry in entries:
        if stop is not None and stop():
            summary.stopped = True
            break
        if PurePosixPath(entry.filename.lower()).suffix not in IMAGE_SUFFIXES:
            summary.skipped_files += 1
            if progress:
                progress(1)
            continue
        if entry.size > max_bytes:  # refused before a byte of it is read (or decompressed)
            summary.refused["too_large"] += 1
            if progress:
                progress(1)
            continue
        try:
            with entry.open() as handle:
                result = image_ingest(
                    data=handle,
                    source_kind=Image.SourceKind.IMPORT,
                    character=characters[entry.folder],
                    status=status,
                    original_name=f"{entry.folder}/{entry.filename}",
                )
        except CORRUPT_ENTRY_ERRORS:  # read whole before anything is stored: nothing of it is kept
            summary.refused["corrupt_entry"] += 1
            if progress:
                progress(1)
            continue
        if result.outcome == "new":
            summary.new += 1
            if awaits_review(result.image):
                waiting.append(result.image.pk)
            else:
                approved_any = True
            if result.near_duplicate_ids:
                summary.near_duplicates += 1
        elif result.outcome == "exact_duplicate":
            summary.exact_duplicates += 1
        else:
            summary.refused[result.reason] += 1
        if progress:
            progress(1)
    suggestions_request(waiting, approved=approved_any)
    return summary
