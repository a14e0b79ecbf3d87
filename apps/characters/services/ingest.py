"""The one ingest path for every way an image arrives: import, upload, crawl.

Validate (decode fully, limits, minimum side), dedupe (exact by sha256, near by pHash through the band
index), store content-addressed, record. Every refusal has a reason code; a known file is a no-op.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from apps.core.queue import enqueue

from ..imaging import ImageRejected, decode_image, make_thumbnail
from ..models import Character, Image
from ..phash import bands, compute_phash, to_signed
from ..selectors import near_duplicates_of_hash
from .curation import curation_changed

logger = logging.getLogger(__name__)

Outcome = Literal["new", "exact_duplicate", "near_duplicate", "refused"]
# keep: store it in the group of its near-duplicates; refuse: do not store it; skip: do not look
# (bulk loads of trusted data: the freeze still checks near-duplicates among what it splits).
NearDuplicatePolicy = Literal["keep", "refuse", "skip"]

# What each path does with a near-duplicate when the caller does not say (the defaults).
DEFAULT_NEAR_DUPLICATE_POLICY: dict[str, NearDuplicatePolicy] = {
    Image.SourceKind.IMPORT: "keep",
    Image.SourceKind.UPLOAD: "keep",
    Image.SourceKind.CRAWL: "refuse",
}


# The review app sits above characters: its task is named, never imported.
SUGGEST_TASK = "apps.review.tasks.suggest_images"
SUGGEST_IMAGES_PER_TASK = 500


@dataclass
class IngestResult:
    outcome: Outcome
    image: Image | None = None
    reason: str = ""  # reason code when refused
    message: str = ""
    near_duplicate_ids: list[int] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """A new image was stored (possibly kept in a near-duplicate group)."""
        return self.outcome == "new"


def media_path(sha256: str, extension: str, *, prefix: str = "images") -> str:
    return f"{prefix}/{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"


def _read_bounded(source: bytes | BinaryIO, limit: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    data = source.read(limit + 1)
    return data


def stored_matches(path: str, *, size: int, sha256: str) -> bool:
    """The file at ``path`` exists and holds exactly ``size`` bytes whose sha256 is ``sha256``."""
    try:
        if not default_storage.exists(path) or default_storage.size(path) != size:
            return False
        digest = hashlib.sha256()
        with default_storage.open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == sha256


def _write_atomically(path: str, content: bytes) -> None:
    """Local disk: a temporary name in the same folder, written, fsynced, renamed over ``path`` (and the folder
    fsynced), so ``path`` holds either nothing, the old bytes or all of the new ones; never a part.
    Other storages (S3) write an object whole or not at all; an old object is replaced."""
    try:
        final = Path(default_storage.path(path))
    except NotImplementedError:
        if default_storage.exists(path):
            default_storage.delete(path)
        saved = default_storage.save(path, ContentFile(content))
        if saved != path:
            raise RuntimeError(f"the storage saved {path} as {saved}") from None
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, settings.FILE_UPLOAD_PERMISSIONS or 0o644)
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _store(path: str, content: bytes) -> str:
    """Save ``content`` under the content-addressed ``path``. A file already there is reused only when its
    size and sha256 are those of ``content``; one cut short (a full disk, a killed worker) is replaced."""
    if stored_matches(path, size=len(content), sha256=hashlib.sha256(content).hexdigest()):
        return path
    if default_storage.exists(path):
        logger.warning("Replacing %s: the stored file is not the bytes it should hold", path)
    _write_atomically(path, content)
    return path


def _heal(image: Image, content: bytes) -> None:
    """The same bytes arrived again: if the image's file went missing or is not its size, they restore it
    (a cheap check; ``manage.py check_media`` compares hashes)."""
    path = image.file.name
    try:
        intact = default_storage.exists(path) and default_storage.size(path) == image.bytes
    except OSError:
        intact = False
    if not intact:
        logger.warning("Restoring %s of image %s from a new copy of its bytes", path, image.pk)
        _write_atomically(path, content)


def image_ingest(
    *,
    data: bytes | BinaryIO,
    source_kind: str,
    character: Character | None = None,
    status: str | None = None,
    near_duplicate_policy: NearDuplicatePolicy | None = None,
    source_site: str = "",
    source_url: str = "",
    source_post_id: str = "",
    source_tags: list[str] | None = None,
    original_name: str = "",
    min_side: int | None = None,
) -> IngestResult:
    """Ingest one file. Never raises for bad input: the result says what happened and why."""
    max_bytes = settings.KYARA_MAX_IMAGE_BYTES
    content = _read_bounded(data, max_bytes)
    if len(content) > max_bytes:
        return IngestResult(
            "refused", reason="too_large", message=f"The file is over the limit of {max_bytes:,} bytes."
        )
    sha256 = hashlib.sha256(content).hexdigest()
    existing = Image.objects.filter(sha256=sha256).first()
    if existing is not None:
        _heal(existing, content)
        return IngestResult("exact_duplicate", image=existing, message=f"Already stored as image {existing.pk}.")
    try:
        decoded = decode_image(
            content,
            max_pixels=settings.KYARA_MAX_IMAGE_PIXELS,
            min_side=settings.KYARA_MIN_IMAGE_SIDE if min_side is None else min_side,
        )
    except ImageRejected as rejected:
        return IngestResult("refused", reason=rejected.reason, message=rejected.message)

    phash = to_signed(compute_phash(decoded.rgb))
    policy = near_duplicate_policy or DEFAULT_NEAR_DUPLICATE_POLICY.get(source_kind, "keep")
    near = near_duplicates_of_hash(phash) if policy != "skip" else []
    if near and policy == "refuse":
        return IngestResult(
            "near_duplicate",
            reason="near_duplicate",
            message=f"Near-duplicate of image {near[0].image_id} (distance {near[0].distance}).",
            near_duplicate_ids=[nd.image_id for nd in near],
        )

    path = _store(media_path(sha256, decoded.extension), content)
    thumb_path = _store(
        media_path(sha256, "webp", prefix="thumbs"), make_thumbnail(decoded.rgb, settings.KYARA_THUMBNAIL_SIZE)
    )
    if status is None:
        status = Image.Status.APPROVED if source_kind == Image.SourceKind.IMPORT and character else Image.Status.PENDING
    b0, b1, b2, b3 = bands(phash)
    try:
        with transaction.atomic():
            image = Image.objects.create(
                sha256=sha256,
                file=path,
                thumbnail=thumb_path,
                format=decoded.format,
                width=decoded.width,
                height=decoded.height,
                bytes=len(content),
                phash=phash,
                phash_b0=b0,
                phash_b1=b1,
                phash_b2=b2,
                phash_b3=b3,
                character=character,
                status=status,
                source_kind=source_kind,
                source_site=source_site,
                source_url=source_url[:1000],
                source_post_id=str(source_post_id)[:100],
                source_tags=list(source_tags or []),
                original_name=original_name[:255],
            )
            _join_group(image, [nd.dup_group or nd.image_id for nd in near])
    except IntegrityError:
        # A concurrent ingest of the same bytes won the race: theirs is the image, ours a no-op.
        existing = Image.objects.filter(sha256=sha256).first()
        if existing is None:
            raise
        return IngestResult("exact_duplicate", image=existing, message=f"Already stored as image {existing.pk}.")
    return IngestResult(
        "new",
        image=image,
        message="Stored." if not near else f"Stored in the near-duplicate group of image {near[0].image_id}.",
        near_duplicate_ids=[nd.image_id for nd in near],
    )


def _join_group(image: Image, neighbour_groups: list[int]) -> None:
    """Put ``image`` in the group of its near-duplicates, merging groups it bridges (smallest id wins)."""
    if not neighbour_groups:
        Image.objects.filter(pk=image.pk).update(dup_group=image.pk)
        image.dup_group = image.pk
        return
    target = min(neighbour_groups)
    others = set(neighbour_groups) - {target}
    if others:
        Image.objects.filter(dup_group__in=others).update(dup_group=target)
    Image.objects.filter(pk=image.pk).update(dup_group=target)
    image.dup_group = target


def awaits_review(image: Image) -> bool:
    """A person still has to look at it: pending, or without a character."""
    return image.status == Image.Status.PENDING or image.character_id is None


def suggestions_request(image_ids: list[int], *, approved: bool = False) -> None:
    """Ask a worker for the default model's suggestions on newly stored images that await review, once the
    caller's transaction commits (a few hundred per task). Uploads and imports call it; a crawl asks the
    same task itself, once per crawl. ``approved``: images were stored approved too (an import of a curated
    set): the galleries take them in."""
    ids = list(image_ids)
    if approved:
        curation_changed()

    def send() -> None:
        for start in range(0, len(ids), SUGGEST_IMAGES_PER_TASK):
            enqueue(SUGGEST_TASK, ids[start:start + SUGGEST_IMAGES_PER_TASK], group="review-suggestions")

    if ids:
        transaction.on_commit(send)
