"""Import, stats, freeze and export: the commands and the services behind them."""
import json
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.characters.models import Character, DatasetItem, DatasetVersion, Image, Series
from apps.characters.services import (
    character_get_or_create,
    dataset_version_freeze,
    image_ingest,
    series_get_or_create,
    split_folder_names,
)
from apps.core.api import ServiceError
from tests.conftest import make_image_bytes, near_copy_bytes

pytestmark = pytest.mark.django_db


def build_tree(root: Path, layout: dict[str, int], *, start: int = 0, near_copies: int = 0) -> Path:
    """Write ``layout`` (folder → number of images) as generated PNGs; ``near_copies`` per folder."""
    seed = start
    for folder, count in layout.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed += 1
            data = make_image_bytes(seed)
            (d / f"img_{i:03d}.png").write_bytes(data)
            if i < near_copies:
                (d / f"img_{i:03d}_copy.jpg").write_bytes(near_copy_bytes(data))
    return root


def run_json(*args) -> dict:
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_folder_names_split_into_series_and_character():
    names = ["genshin_impact_胡桃", "genshin_impact_甘雨", "honkai_star_rail_三月七", "honkai_star_rail_丹恒",
             "pokemon_Mr. Mime", "pokemon_Nidoran♀", "pokemon_Tapu_Koko", "blue_Arona (swimsuit)"]
    mapping = split_folder_names(names, known_series=set())
    assert mapping["genshin_impact_胡桃"] == ("genshin_impact", "胡桃")
    assert mapping["honkai_star_rail_丹恒"] == ("honkai_star_rail", "丹恒")
    assert mapping["pokemon_Mr. Mime"] == ("pokemon", "Mr. Mime")
    assert mapping["pokemon_Tapu_Koko"] == ("pokemon", "Tapu_Koko")
    assert mapping["blue_Arona (swimsuit)"] == ("blue", "Arona (swimsuit)")
    known = split_folder_names(["honkai_star_rail_丹恒", "honkai_impact_Kiana"], known_series={"honkai_star_rail"})
    assert known["honkai_star_rail_丹恒"] == ("honkai_star_rail", "丹恒")
    assert known["honkai_impact_Kiana"] == ("honkai", "impact_Kiana")


def test_import_folder_is_idempotent_and_summarised(tmp_path):
    root = build_tree(tmp_path / "data", {"genshin_impact_胡桃": 5, "genshin_impact_甘雨 (yuheng)": 4,
                                          "honkai_star_rail_三月七": 3}, near_copies=1)
    (root / "genshin_impact_胡桃" / "notes.txt").write_text("not an image")
    (root / "honkai_star_rail_三月七" / "tiny.png").write_bytes(make_image_bytes(999, size=(20, 20)))
    (root / "honkai_star_rail_三月七" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    first = run_json("import_images", str(root))
    assert first["new"] == 15  # 12 originals + 3 near copies kept in groups
    assert first["near_duplicates"] == 3
    assert first["refused"] == {"too_small": 1, "truncated": 1}
    assert first["skipped_files"] == 1
    assert first["series"] == 2 and first["characters"] == 3
    assert Character.objects.get(name="甘雨 (yuheng)").series.slug == "genshin_impact"
    assert Image.objects.filter(status="approved", source_kind="import").count() == 15
    second = run_json("import_images", str(root))
    assert second["new"] == 0 and second["exact_duplicates"] == 15
    assert Image.objects.count() == 15


def test_import_zip_and_known_series(tmp_path):
    series_get_or_create(slug="honkai_star_rail")
    root = build_tree(tmp_path / "data", {"honkai_star_rail_丹恒": 3}, start=100)
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in root.rglob("*.png"):
            zf.write(f, f"export/{f.relative_to(root).as_posix()}")
    summary = run_json("import_images", str(archive))
    assert summary["new"] == 3
    assert Character.objects.get(name="丹恒").series.slug == "honkai_star_rail"


def test_import_of_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="neither a folder nor a zip"):
        call_command("import_images", str(tmp_path / "nope"))


def _library(n_chars=3, per_char=20, near_copies=3, posts=False):
    series = series_get_or_create(slug="test_series")
    seed = 0
    chars = []
    for c in range(n_chars):
        ch = character_get_or_create(series=series, name=f"char{c}")
        chars.append(ch)
        for i in range(per_char):
            seed += 1
            data = make_image_bytes(seed + 1000 * c)
            post = f"{c}-{i // 2}" if posts else ""  # two distinct pictures per post, posts per character
            image_ingest(data=data, source_kind="import", character=ch, source_site="site" if posts else "",
                         source_post_id=post)
            if i < near_copies:
                image_ingest(data=near_copy_bytes(data), source_kind="import", character=ch)
    return chars


@pytest.mark.backend
def test_freeze_is_stratified_group_aware_and_leak_free():
    _library(near_copies=4, posts=True)
    result = run_json("freeze_dataset", "--name", "v1", "--seed", "3")
    version = DatasetVersion.objects.get(pk=result["id"])
    assert result["leaks"] == 0 and version.leak_report["near_duplicate_pairs"] == []
    assert sum(result["counts"].values()) == 3 * 24
    for slug, splits in version.counts["characters"].items():
        assert all(splits[s] >= 1 for s in ("train", "val", "test")), (slug, splits)
        assert splits["train"] > splits["val"]
    items = {i.image_id: i.split for i in DatasetItem.objects.filter(version=version)}
    for image in Image.objects.all():
        group = Image.objects.filter(dup_group=image.dup_group).values_list("id", flat=True)
        assert {items[g] for g in group} == {items[image.pk]}  # near-duplicates share a split
    # So do the images of one post; each post holds two different pictures (not near-duplicates of each
    # other), so only the post keeps them together: 3 characters x 10 posts, none of them vacuous.
    posts = {}
    for image in Image.objects.exclude(source_post_id=""):
        posts.setdefault((image.source_site, image.source_post_id), []).append(image)
    assert len(posts) == 30
    for key, images in posts.items():
        assert len(images) == 2 and len({i.dup_group for i in images}) == 2, key
        assert len({items[i.pk] for i in images}) == 1, key
    assert len({items[i.pk] for images in posts.values() for i in images}) == 3  # and posts land in every split


@pytest.mark.backend
def test_freeze_is_reproducible_and_hashes_content():
    _library(n_chars=2, per_char=12, near_copies=0)
    a = dataset_version_freeze(name="a", seed=1)
    b = dataset_version_freeze(name="b", seed=1)
    c = dataset_version_freeze(name="c", seed=2)
    assert a.content_hash == b.content_hash
    assert c.content_hash != a.content_hash


def test_freeze_excludes_small_characters_and_refuses_bad_requests():
    _library(n_chars=2, per_char=10, near_copies=0)
    series = Series.objects.get()
    few = character_get_or_create(series=series, name="few")
    for s in range(3):
        image_ingest(data=make_image_bytes(5000 + s), source_kind="import", character=few)
    version = dataset_version_freeze(name="v", min_images=6)
    assert few.slug in version.excluded and "3 approved images" in version.excluded[few.slug]
    assert not DatasetItem.objects.filter(version=version, character=few).exists()
    with pytest.raises(ServiceError, match="already exists"):
        dataset_version_freeze(name="v")
    with pytest.raises(ServiceError, match="val \\+ test < 1"):
        dataset_version_freeze(name="w", val=0.6, test=0.5)
    with pytest.raises(ServiceError, match="No active character"):
        dataset_version_freeze(name="x", min_images=1000)


def test_freeze_fails_and_lists_pairs_when_a_leak_would_happen(settings, monkeypatch):
    _library(n_chars=1, per_char=12, near_copies=2)
    # Simulate groups that were never recorded (e.g. images ingested before a threshold change).
    Image.objects.update(dup_group=None)
    from apps.characters.services import versions

    # A splitter that ignores groups and deals images round-robin: the gate must catch it.
    monkeypatch.setattr(versions, "_components", lambda rows, d: [[i] for i in range(len(rows))])
    monkeypatch.setattr(versions, "_assign", lambda comps, fractions, rng: {
        row: versions.SPLITS[k % 3] for k, comp in enumerate(comps) for row in comp})
    with pytest.raises(CommandError, match="would leak") as err:
        call_command("freeze_dataset", "--name", "leaky", "--seed", "0")
    assert "images" in str(err.value) and "distance" in str(err.value)
    assert not DatasetVersion.objects.filter(name="leaky").exists()


def test_export_writes_imagefolder_trees_and_a_manifest(tmp_path):
    _library(n_chars=2, per_char=10, near_copies=0)
    version = dataset_version_freeze(name="exp")
    out = StringIO()
    call_command("export_dataset", "exp", str(tmp_path / "out"), stdout=out)
    from torchvision.datasets import ImageFolder

    for split in ("train", "val", "test"):
        folder = ImageFolder(str(tmp_path / "out" / split))
        assert folder.classes == ["test_series_char0", "test_series_char1"]
        assert len(folder) == version.counts["splits"][split]
    manifest = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "path,split,character,series,sha256,phash,source_url"
    assert len(manifest) == 1 + 20


def test_dataset_stats_counts_status_and_latest_split():
    _library(n_chars=2, per_char=8, near_copies=0)
    image_ingest(data=make_image_bytes(9999), source_kind="upload")  # unlabelled, pending
    dataset_version_freeze(name="s1")
    stats = run_json("dataset_stats")
    assert stats["latest_version"] == "s1"
    assert stats["images"] == 17 and stats["unlabelled"] == {"pending": 1}
    entry = stats["series"][0]["characters"][0]
    assert entry["status"] == {"approved": 8}
    assert sum(entry["split"].values()) == 8
