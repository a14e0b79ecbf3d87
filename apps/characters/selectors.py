"""Reads that need more than one query or some care: near-duplicates, stats, the latest version."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Count, Q, QuerySet

from .models import Character, DatasetItem, DatasetVersion, Image
from .phash import band_probes, hamming


@dataclass(frozen=True)
class NearDuplicate:
    image_id: int
    distance: int
    dup_group: int | None


def near_duplicates_of_hash(
    phash: int, *, max_distance: int | None = None, exclude_id: int | None = None
) -> list[NearDuplicate]:
    """Stored images whose pHash lies within ``max_distance`` of ``phash``, nearest first.

    The database finds candidates through the indexed band columns (see ``phash.py``); only those
    candidates' hashes are compared here.
    """
    if max_distance is None:
        max_distance = settings.KYARA_NEAR_DUPLICATE_DISTANCE
    probes = band_probes(phash, max_distance)
    condition = Q()
    for index, values in enumerate(probes):
        condition |= Q(**{f"phash_b{index}__in": values})
    candidates = Image.objects.filter(condition).values_list("id", "phash", "dup_group")
    found = []
    for image_id, other, group in candidates:
        if image_id == exclude_id:
            continue
        distance = hamming(phash, other)
        if distance <= max_distance:
            found.append(NearDuplicate(image_id, distance, group))
    found.sort(key=lambda nd: (nd.distance, nd.image_id))
    return found


def near_duplicates_of(image: Image, *, max_distance: int | None = None) -> QuerySet[Image]:
    """The images near-identical to ``image`` (itself excluded), nearest first is left to the caller."""
    ids = [nd.image_id for nd in near_duplicates_of_hash(image.phash, max_distance=max_distance, exclude_id=image.pk)]
    return Image.objects.filter(pk__in=ids).select_related("character__series")


def latest_dataset_version() -> DatasetVersion | None:
    return DatasetVersion.objects.order_by("-created_at", "-id").first()


def previous_dataset_version(version: DatasetVersion) -> DatasetVersion | None:
    """The version frozen just before ``version``."""
    return (DatasetVersion.objects.filter(Q(created_at__lt=version.created_at)
                                          | Q(created_at=version.created_at, id__lt=version.pk))
            .order_by("-created_at", "-id").first())


def version_changes(*, items: Iterable[tuple[int, int]], previous: DatasetVersion | None) -> dict:
    """Images added and removed per character from ``previous`` to ``items`` ((image id, character id) pairs:
    a version's, or a freeze plan's). An image relabelled counts as removed from one character and added to
    the other. Characters without a change are left out; the totals count them all."""
    after: dict[int, set[int]] = defaultdict(set)
    for image_id, character_id in items:
        after[character_id].add(image_id)
    before: dict[int, set[int]] = defaultdict(set)
    if previous is not None:
        for image_id, character_id in DatasetItem.objects.filter(version=previous).values_list("image_id",
                                                                                                "character_id"):
            before[character_id].add(image_id)
    names = {pk: (slug, name) for pk, slug, name in
             Character.objects.filter(pk__in=set(before) | set(after)).values_list("id", "slug", "name")}
    rows = []
    for character_id, (slug, name) in sorted(names.items(), key=lambda item: item[1]):
        old, new = before.get(character_id, set()), after.get(character_id, set())
        added, removed = len(new - old), len(old - new)
        if added or removed:
            rows.append({"character": slug, "name": name, "before": len(old), "after": len(new), "added": added,
                         "removed": removed})
    return {"previous": previous.name if previous else None, "characters": rows,
            "added": sum(r["added"] for r in rows), "removed": sum(r["removed"] for r in rows),
            "images": sum(len(ids) for ids in after.values())}


def version_summary(version: DatasetVersion | None) -> dict | None:
    """A frozen version as the pages show it: the version, its leak report and what changed since the one before."""
    if version is None:
        return None
    items = DatasetItem.objects.filter(version=version).values_list("image_id", "character_id")
    return {"version": version, "report": version.leak_report or {},
            "changes": version_changes(items=items, previous=previous_dataset_version(version))}


def dataset_stats() -> dict:
    """Counts per series and character, by status, and by split of the latest dataset version."""
    latest = latest_dataset_version()
    status_rows = (
        Image.objects.values("character_id", "status").annotate(n=Count("id")).order_by()
    )
    by_status: dict[int | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in status_rows:
        by_status[row["character_id"]][row["status"]] += row["n"]
    by_split: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if latest is not None:
        split_rows = (
            DatasetItem.objects.filter(version=latest).values("character_id", "split").annotate(n=Count("id")).order_by()
        )
        for row in split_rows:
            by_split[row["character_id"]][row["split"]] += row["n"]
    series_out: dict[str, dict] = {}
    for character in Character.objects.select_related("series").order_by("series__slug", "name"):
        series_entry = series_out.setdefault(
            character.series.slug,
            {"series": character.series.slug, "name": character.series.name, "characters": [], "totals": defaultdict(int)},
        )
        statuses = dict(by_status.get(character.pk, {}))
        splits = dict(by_split.get(character.pk, {}))
        series_entry["characters"].append(
            {
                "character": character.slug,
                "name": character.name,
                "active": character.active,
                "status": statuses,
                "total": sum(statuses.values()),
                "split": splits,
                "thin": latest is not None and 0 < splits.get("train", 0) < settings.KYARA_THIN_CHARACTER_IMAGES,
            }
        )
        for status, n in statuses.items():
            series_entry["totals"][status] += n
    unlabelled = dict(by_status.get(None, {}))
    totals: dict[str, int] = defaultdict(int)
    for entries in by_status.values():
        for status, n in entries.items():
            totals[status] += n
    return {
        "latest_version": latest.name if latest else None,
        "series": [{**entry, "totals": dict(entry["totals"])} for entry in series_out.values()],
        "unlabelled": unlabelled,
        "totals": dict(totals),
        "images": sum(totals.values()),
        "characters": Character.objects.count(),
    }


def thin_characters(version: DatasetVersion) -> list[dict]:
    """Characters of ``version`` with fewer training images than ``KYARA_THIN_CHARACTER_IMAGES``: a model
    learns little from them and their accuracy says little (fewest first)."""
    rows = (DatasetItem.objects.filter(version=version, split=DatasetItem.Split.TRAIN)
            .values("character__slug", "character__name").annotate(train=Count("id"))
            .filter(train__lt=settings.KYARA_THIN_CHARACTER_IMAGES).order_by("train", "character__slug"))
    return [{"character": row["character__slug"], "name": row["character__name"], "train": row["train"]} for row in rows]


def trainable_images() -> QuerySet[Image]:
    """Images a freeze takes: approved, labelled with an active character."""
    return Image.objects.filter(status=Image.Status.APPROVED, character__isnull=False, character__active=True)


EXAMPLES_MAX_CHARACTERS = 20


def image_urls(image: Image) -> dict:
    full = image.file.url if image.file else ""
    thumb = default_storage.url(image.thumbnail) if image.thumbnail else full
    return {"id": image.pk, "thumbnail": thumb, "url": full}


def example_images(slugs: list[str], *, per_character: int = 4) -> dict[str, dict]:
    """A few approved pictures of each character (newest first): what the predict page shows beside
    a prediction, so a person can judge it."""
    slugs = list(dict.fromkeys(s for s in slugs if s))[:EXAMPLES_MAX_CHARACTERS]
    found = {c.slug: c for c in Character.objects.select_related("series").filter(slug__in=slugs)}
    out = {}
    for slug in slugs:
        character = found.get(slug)
        if character is None:
            out[slug] = {"name": slug, "series": None, "images": []}
            continue
        images = Image.objects.filter(character=character, status=Image.Status.APPROVED).order_by("-id")[:per_character]
        out[slug] = {"name": character.name, "series": character.series.name,
                     "images": [image_urls(image) for image in images]}
    return out
