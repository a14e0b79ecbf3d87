"""Freeze a dataset version (stratified, group-aware, leak-checked) and export it."""
from __future__ import annotations

import csv
import hashlib
import random
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import transaction

from apps.core.api import ServiceError

from ..models import Character, DatasetItem, DatasetVersion
from ..phash import near_pairs, phash_hex
from ..selectors import trainable_images

SPLITS = ("train", "val", "test")


class LeakError(ServiceError):
    pass


@dataclass
class _Row:
    image_id: int
    character_id: int
    sha256: str
    phash: int
    dup_group: int | None
    post: tuple[str, str] | None


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _components(rows: list[_Row], max_distance: int) -> list[list[int]]:
    """Groups of row indices that must share a split: near-duplicates (stored groups and a fresh
    check at the current threshold) and images of the same source post."""
    uf = _UnionFind(len(rows))
    first_of: dict[tuple, int] = {}
    for index, row in enumerate(rows):
        keys = [("group", row.dup_group)] if row.dup_group is not None else []
        if row.post:
            keys.append(("post", row.post))
        for key in keys:
            if key in first_of:
                uf.union(first_of[key], index)
            else:
                first_of[key] = index
    for i, j, _ in near_pairs([r.phash for r in rows], max_distance):
        uf.union(i, j)
    groups: dict[int, list[int]] = defaultdict(list)
    for index in range(len(rows)):
        groups[uf.find(index)].append(index)
    return list(groups.values())


def _assign(components: list[list[int]], fractions: dict[str, float], rng: random.Random) -> dict[int, str]:
    """Assign whole components to splits so each split's share of images approaches its fraction."""
    rng.shuffle(components)
    components.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
    total = sum(len(c) for c in components)
    target = {s: fractions[s] * total for s in SPLITS}
    current = dict.fromkeys(SPLITS, 0)
    chosen: dict[int, str] = {}
    for index, component in enumerate(components):
        split = max(SPLITS, key=lambda s: (target[s] - current[s], s == "train"))
        chosen[index] = split
        current[split] += len(component)
    # Every split that should have images gets at least one component, taken from the largest split.
    for split in ("test", "val"):
        if fractions[split] > 0 and current[split] == 0:
            donor = max(SPLITS, key=lambda s: current[s])
            movable = [i for i, s in chosen.items() if s == donor]
            if len(movable) > 1:
                smallest = min(movable, key=lambda i: len(components[i]))
                chosen[smallest] = split
                current[donor] -= len(components[smallest])
                current[split] += len(components[smallest])
    return {row: chosen[i] for i, component in enumerate(components) for row in component}


def leak_report(rows: list[_Row], splits: dict[int, str], max_distance: int) -> dict:
    """Cross-split near-duplicate pairs and source posts split apart; a frozen version has none."""
    pairs = []
    for i, j, distance in near_pairs([r.phash for r in rows], max_distance):
        if splits[i] != splits[j]:
            pairs.append({"a": rows[i].image_id, "b": rows[j].image_id, "distance": distance,
                          "splits": [splits[i], splits[j]]})
    posts: dict[tuple, set[str]] = defaultdict(set)
    for index, row in enumerate(rows):
        if row.post:
            posts[row.post].add(splits[index])
    split_posts = [f"{site}:{post}" for (site, post), s in posts.items() if len(s) > 1]
    return {"max_distance": max_distance, "near_duplicate_pairs": pairs, "split_posts": split_posts,
            "leaks": len(pairs) + len(split_posts)}


@dataclass
class FreezePlan:
    """What a freeze with these parameters would make, computed without writing anything: the images and
    their splits, the leak report, the characters left out. The freeze saves it; the pages preview it."""

    params: dict
    rows: list[_Row]
    splits: dict[int, str]  # row index → split
    slugs: dict[int, str]  # character id → slug
    excluded: dict[str, str]
    report: dict

    def items(self) -> list[tuple[int, int, str]]:
        """(image id, character id, split) of every image the version would hold."""
        return [(self.rows[i].image_id, self.rows[i].character_id, s) for i, s in self.splits.items()]

    def counts(self) -> dict:
        split_counts = Counter(self.splits.values())
        per_character: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
        for i, s in self.splits.items():
            per_character[self.slugs[self.rows[i].character_id]][s] += 1
        return {"splits": {s: split_counts.get(s, 0) for s in SPLITS}, "characters": dict(per_character),
                "num_characters": len(per_character)}

    def content_hash(self) -> str:
        manifest = sorted(f"{self.rows[i].sha256}\t{self.slugs[self.rows[i].character_id]}\t{s}"
                          for i, s in self.splits.items())
        return hashlib.sha256("\n".join(manifest).encode()).hexdigest()


def dataset_version_plan(*, val: float = 0.15, test: float = 0.15, seed: int = 0, min_images: int = 6) -> FreezePlan:
    """Split today's trainable images (stratified per character, near-duplicates and posts kept together) and
    check the split for leaks. Reads only."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ServiceError("invalid_fractions", "val and test must be fractions with val + test < 1.")
    max_distance = settings.KYARA_NEAR_DUPLICATE_DISTANCE
    counts_by_character = Counter(trainable_images().values_list("character_id", flat=True))
    excluded = {}
    kept_ids = set()
    slugs = dict(Character.objects.values_list("id", "slug"))
    for character_id, n in counts_by_character.items():
        if n < min_images:
            excluded[slugs[character_id]] = f"{n} approved images, fewer than {min_images}"
        else:
            kept_ids.add(character_id)
    if not kept_ids:
        raise ServiceError(
            "nothing_to_freeze", f"No active character has {min_images} or more approved images; approve or import some."
        )
    rows = [
        _Row(i, c, sha, ph, g, (site, post) if post else None)
        for i, c, sha, ph, g, site, post in trainable_images()
        .filter(character_id__in=kept_ids)
        .order_by("id")
        .values_list("id", "character_id", "sha256", "phash", "dup_group", "source_site", "source_post_id")
    ]
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    by_character: dict[int, list[list[int]]] = defaultdict(list)
    for component in _components(rows, max_distance):
        owner = Counter(rows[i].character_id for i in component).most_common(1)[0][0]
        by_character[owner].append(component)
    splits: dict[int, str] = {}
    for character_id, components in sorted(by_character.items()):
        rng = random.Random(f"{seed}:{slugs[character_id]}")
        splits.update(_assign(components, fractions, rng))
    return FreezePlan(params={"val": val, "test": test, "seed": seed, "min_images": min_images,
                              "max_distance": max_distance},
                      rows=rows, splits=splits, slugs=slugs, excluded=excluded,
                      report=leak_report(rows, splits, max_distance))


def dataset_version_freeze(
    *,
    name: str,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    min_images: int = 6,
    notes: str = "",
    created_by: AbstractBaseUser | None = None,
) -> DatasetVersion:
    if not name.strip():
        raise ServiceError("invalid_name", "A dataset version needs a name.")
    if DatasetVersion.objects.filter(name=name).exists():
        raise ServiceError("name_taken", f"A dataset version named {name!r} already exists; pick another name.")
    plan = dataset_version_plan(val=val, test=test, seed=seed, min_images=min_images)
    report = plan.report
    if report["leaks"]:
        raise LeakError("leaks_found", f"The split would leak: {report['leaks']} cross-split pairs.", report=report)
    with transaction.atomic():
        version = DatasetVersion.objects.create(
            name=name, content_hash=plan.content_hash(), notes=notes, counts=plan.counts(), excluded=plan.excluded,
            created_by=created_by if created_by and created_by.is_authenticated else None,
            params=plan.params, leak_report=report,
        )
        DatasetItem.objects.bulk_create(
            [DatasetItem(version=version, image_id=image_id, character_id=character_id, split=split)
             for image_id, character_id, split in plan.items()],
            batch_size=2000,
        )
    return version


def dataset_version_export(*, version: DatasetVersion, path: str | Path) -> dict:
    """Write ``train/ val/ test/`` with ``<series>_<character>/`` folders and ``manifest.csv``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    items = version.items.select_related("image", "character__series").order_by("split", "character__slug", "image__sha256")
    written = Counter()
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split", "character", "series", "sha256", "phash", "source_url"])
        for item in items.iterator(chunk_size=2000):
            image = item.image
            relative = Path(item.split) / item.character.folder_name / Path(image.file.name).name
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                with default_storage.open(image.file.name, "rb") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            writer.writerow([relative.as_posix(), item.split, item.character.slug, item.character.series.slug,
                             image.sha256, phash_hex(image.phash), image.source_url])
            written[item.split] += 1
    (root / "VERSION").write_text(f"{version.name}\n{version.content_hash}\n", encoding="utf-8")
    return {"path": str(root), "splits": dict(written), "content_hash": version.content_hash}
