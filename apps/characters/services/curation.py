"""Series and characters, and curation of images: approve, reject with a reason, relabel. Audited."""
from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils.text import slugify

from apps.core.api import ServiceError
from apps.core.queue import enqueue

from ..models import Character, Image, ImageEvent, Series

REJECT_REASONS = {
    "wrong_character": "Shows another character",
    "not_the_character": "The character is not in it",
    "multiple_characters": "Several characters",
    "low_quality": "Blurry, tiny or heavily compressed",
    "not_art": "Not an illustration (photo, screenshot of text, ...)",
    "nsfw": "Not suitable",
    "duplicate": "Duplicate of another image",
    "file_missing": "The stored file is missing or damaged (manage.py check_media)",
    "other": "Other",
}


# The inference app keeps each serving model's gallery (the prototypes of approved characters) and sits above
# characters: its task is named, never imported.
GALLERY_TASK = "apps.inference.tasks.gallery_refresh"


def curation_changed() -> None:
    """Approved images changed (added, approved, rejected, relabelled): once the caller's transaction commits,
    a worker refreshes the galleries, so a character approved now is answered within a minute."""
    transaction.on_commit(lambda: enqueue(GALLERY_TASK, group="gallery"))


def _slug(text: str) -> str:
    slug = slugify(text, allow_unicode=True)
    return slug or "x"


def series_get_or_create(*, slug: str, name: str | None = None) -> Series:
    slug = _slug(slug).replace("-", "_")
    series, _ = Series.objects.get_or_create(slug=slug, defaults={"name": name or slug.replace("_", " ").title()})
    return series


def character_get_or_create(*, series: Series, name: str) -> Character:
    """The character called ``name`` in ``series``, created with a unique slug if new."""
    name = name.strip()
    if not name:
        raise ServiceError("invalid_character", "A character needs a name.")
    existing = Character.objects.filter(series=series, name=name).first()
    if existing:
        return existing
    base = _slug(f"{series.slug}_{name}")
    slug, n = base, 1
    while Character.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    with transaction.atomic():
        character, _ = Character.objects.get_or_create(series=series, name=name, defaults={"slug": slug})
    return character


def _record(images: list[Image], *, kind: str, field: str, new_value, actor, reason: str = "", display=str) -> int:
    events = []
    for image in images:
        old = getattr(image, field)
        if old == new_value:
            continue
        events.append(
            ImageEvent(
                image=image,
                actor=actor if actor and actor.is_authenticated else None,
                kind=kind,
                from_value=display(old) if old is not None else "",
                to_value=display(new_value) if new_value is not None else "",
                reason=reason,
            )
        )
    ImageEvent.objects.bulk_create(events)
    return len(events)


@transaction.atomic
def image_set_status(
    *, image_ids: Iterable[int], status: str, actor: AbstractBaseUser | None = None, reason: str = ""
) -> int:
    """Approve or reject (with a reason code) or send back to pending; returns how many changed."""
    if status not in Image.Status.values:
        raise ServiceError("invalid_status", f"Unknown status {status!r}; use one of {', '.join(Image.Status.values)}.")
    if status == Image.Status.REJECTED and reason not in REJECT_REASONS:
        raise ServiceError(
            "invalid_reason", f"A rejection needs a reason code, one of: {', '.join(REJECT_REASONS)}."
        )
    images = list(Image.objects.select_for_update().filter(pk__in=list(image_ids)))
    changed = [i for i in images if i.status != status or (status == Image.Status.REJECTED and i.reason != reason)]
    _record(changed, kind=ImageEvent.Kind.STATUS, field="status", new_value=status, actor=actor, reason=reason)
    Image.objects.filter(pk__in=[i.pk for i in changed]).update(
        status=status, reason=reason if status == Image.Status.REJECTED else ""
    )
    if any(Image.Status.APPROVED in (image.status, status) for image in changed):
        curation_changed()
    return len(changed)


def image_approve(*, image_ids: Iterable[int], actor: AbstractBaseUser | None = None) -> int:
    return image_set_status(image_ids=image_ids, status=Image.Status.APPROVED, actor=actor)


def image_reject(*, image_ids: Iterable[int], reason: str, actor: AbstractBaseUser | None = None) -> int:
    return image_set_status(image_ids=image_ids, status=Image.Status.REJECTED, actor=actor, reason=reason)


@transaction.atomic
def image_relabel(
    *, image_ids: Iterable[int], character: Character | None, actor: AbstractBaseUser | None = None, reason: str = ""
) -> int:
    """Give images another character (or none). Files are never moved: the row is the truth."""
    images = list(Image.objects.select_for_update(of=("self",)).select_related("character").filter(pk__in=list(image_ids)))
    changed = [i for i in images if i.character_id != (character.pk if character else None)]
    _record(changed, kind=ImageEvent.Kind.LABEL, field="character", new_value=character, actor=actor,
            reason=reason, display=lambda c: c.slug)
    Image.objects.filter(pk__in=[i.pk for i in changed]).update(character=character)
    if any(image.status == Image.Status.APPROVED for image in changed):
        curation_changed()
    return len(changed)
