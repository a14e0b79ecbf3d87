"""The one ingest path for every way an image arrives: import, upload, crawl.

Validate (decode fully, limits, minimum side), dedupe (exact by sha256, near by pHash through the band
index), store content-addressed, record. Every refusal has a reason code; a known file is a no-op.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from ..imaging import ImageRejected, decode_image, make_thumbnail
from ..models import Character, Image
from ..phash import bands, compute_phash, to_signed
from ..selectors import near_duplicates_of_hash

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


def _store(path: str, content: bytes) -> str:
    """Save under the content-addressed ``path``; an existing file with that name is the same bytes."""
    if default_storage.exists(path):
        return path
    return default_storage.save(path, ContentFile(content))


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
