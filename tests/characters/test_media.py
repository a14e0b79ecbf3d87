"""Atomic media: a file cut short is never kept under its content-addressed name, nor reused; check_media
finds rows whose file is missing or wrong and repairs what it can; zip import reads no member whole."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.characters.models import Image, ImageEvent
from apps.characters.services import image_ingest, images_import
from tests.conftest import ROOT, make_image_bytes

pytestmark = pytest.mark.django_db


def stored(media_root: Path, image: Image) -> Path:
    return media_root / image.file.name


def test_a_write_cut_short_leaves_nothing_under_the_final_name_and_the_next_ingest_stores_it_whole(media_root, tmp_path):
    data = make_image_bytes(1, size=(400, 400))
    sha = hashlib.sha256(data).hexdigest()
    source = tmp_path / "picture.png"
    source.write_bytes(data)
    # A real process whose writes stop at half the file (RLIMIT_FSIZE: what a full disk does to a writer).
    script = f"""
import os, resource, signal, sys
sys.path.insert(0, {str(ROOT)!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
import django; django.setup()
from django.conf import settings
settings.MEDIA_ROOT = {str(media_root)!r}
from apps.characters.services.ingest import _store, media_path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({len(data) // 2}, resource.RLIM_INFINITY))
data = open({str(source)!r}, "rb").read()
try:
    _store(media_path({sha!r}, "png"), data)
except OSError as exc:
    print("write failed:", exc.errno)
    sys.exit(3)
"""
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "KYARA_DATA_DIR": str(tmp_path)})
    assert child.returncode == 3, child.stdout + child.stderr
    final = media_root / "images" / sha[:2] / sha[2:4] / f"{sha}.png"
    assert not final.exists()
    assert list(final.parent.iterdir()) == []  # nor a temporary file left behind

    result = image_ingest(data=data, source_kind="upload")
    assert result.outcome == "new" and stored(media_root, result.image).read_bytes() == data


def test_an_existing_file_is_reused_only_when_it_is_the_same_bytes(media_root):
    data = make_image_bytes(2, size=(300, 300))
    sha = hashlib.sha256(data).hexdigest()
    final = media_root / "images" / sha[:2] / sha[2:4] / f"{sha}.png"
    final.parent.mkdir(parents=True)
    final.write_bytes(data[: len(data) // 2])  # left by a killed worker before its row was written
    result = image_ingest(data=data, source_kind="upload")
    assert result.outcome == "new" and final.read_bytes() == data
    # Same size, other bytes (bit rot): replaced too.
    image = result.image
    image.delete()
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    final.write_bytes(bytes(flipped))
    assert image_ingest(data=data, source_kind="upload").outcome == "new" and final.read_bytes() == data
    assert oct(final.stat().st_mode & 0o777) == "0o644"


def test_the_same_bytes_again_restore_a_lost_file(media_root):
    data = make_image_bytes(3)
    image = image_ingest(data=data, source_kind="upload").image
    stored(media_root, image).unlink()
    again = image_ingest(data=data, source_kind="upload")
    assert again.outcome == "exact_duplicate" and stored(media_root, image).read_bytes() == data


def run_check(*args) -> tuple[int, dict]:
    out = StringIO()
    try:
        call_command("check_media", *args, "--json", stdout=out)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, json.loads(out.getvalue())


def test_check_media_lists_and_repairs(media_root, tmp_path, character, staff_user):
    datas = [make_image_bytes(10 + i, size=(120, 120)) for i in range(4)]
    images = [image_ingest(data=d, source_kind="import", character=character).image for d in datas]
    ok, gone, cut, thumbless = images
    stored(media_root, gone).unlink()
    stored(media_root, cut).write_bytes(datas[2][:100])
    (media_root / thumbless.thumbnail).write_bytes(b"not a webp")
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "copy-of-gone.png").write_bytes(datas[1])  # a copy of the lost one, under any name
    (backup / "unrelated.png").write_bytes(make_image_bytes(99))

    code, report = run_check()
    assert code == 1 and report["checked"] == 4
    assert {(p["image"], p["problem"]) for p in report["problems"]} == {
        (gone.pk, "missing"), (cut.pk, "wrong_size"), (thumbless.pk, "thumbnail_broken")}
    assert all(p["repaired"] == "" for p in report["problems"])

    code, report = run_check("--repair", "--from", str(backup))
    assert code == 0, report
    assert {p["image"]: p["repaired"] for p in report["problems"]} == {
        gone.pk: "restored", cut.pk: "rejected", thumbless.pk: "thumbnail_made"}
    assert stored(media_root, gone).read_bytes() == datas[1]
    assert not stored(media_root, cut).exists()  # not the bytes it names: deleted, never served
    cut.refresh_from_db()
    assert (cut.status, cut.reason) == ("rejected", "file_missing")
    assert ImageEvent.objects.filter(image=cut, reason="file_missing").exists()
    assert stored(media_root, ok).read_bytes() == datas[0]
    from PIL import Image as PILImage

    assert PILImage.open(media_root / thumbless.thumbnail).format == "WEBP"

    # Known losses no longer fail the check; ingesting the lost bytes again restores the file.
    code, report = run_check()
    assert code == 0 and report["problems"] == [] and report["known_missing"] == 1
    image_ingest(data=datas[2], source_kind="import", character=character)
    assert stored(media_root, cut).read_bytes() == datas[2]


def _aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_check_media_lists_and_removes_stray_files_past_the_grace(media_root, character):
    kept = image_ingest(data=make_image_bytes(20), source_kind="import", character=character).image
    # What killed ingests leave: a whole file under its final name whose row was never committed (and its
    # thumbnail), and a temporary file whose write never reached the rename.
    data = make_image_bytes(21)
    sha = hashlib.sha256(data).hexdigest()
    folder = media_root / "images" / sha[:2] / sha[2:4]
    folder.mkdir(parents=True)
    orphan = folder / f"{sha}.png"
    orphan.write_bytes(data)
    _aged(orphan, 7200)
    thumb = media_root / "thumbs" / sha[:2] / sha[2:4] / f"{sha}.webp"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"RIFF....WEBP")
    _aged(thumb, 7200)
    partial = folder / f".{sha}.png.k2j_x9.part"
    partial.write_bytes(data[:50])
    _aged(partial, 7200)
    young_sha = hashlib.sha256(b"young").hexdigest()
    young = media_root / "images" / young_sha[:2] / young_sha[2:4] / f"{young_sha}.png"
    young.parent.mkdir(parents=True)
    young.write_bytes(b"an ingest still running wrote this a moment before its row")
    (folder / "notes.txt").write_bytes(b"not a media name: never touched")

    code, report = run_check()
    relative = {str(p.relative_to(media_root)): kind for p, kind in ((orphan, "orphan"), (thumb, "orphan"),
                                                               (partial, "temporary"))}
    assert code == 1 and report["problems"] == []
    assert {s["path"]: s["kind"] for s in report["strays"]} == relative
    assert not any(s["removed"] for s in report["strays"])

    code, report = run_check("--repair")
    assert code == 0 and all(s["removed"] for s in report["strays"]) and len(report["strays"]) == 3
    assert not orphan.exists() and not thumb.exists() and not partial.exists()
    assert young.exists() and (folder / "notes.txt").exists()
    assert stored(media_root, kept).exists() and (media_root / kept.thumbnail).exists()  # files rows name stay
    code, report = run_check("--grace", "0")  # the young file is a stray once no grace is given
    assert code == 1 and [s["path"] for s in report["strays"]] == [str(young.relative_to(media_root))]


def test_zip_import_refuses_a_huge_member_without_reading_it(settings, tmp_path):
    settings.KYARA_MAX_IMAGE_BYTES = 1024 * 1024
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("series_hero/huge.png", b"\0" * (200 * 1024 * 1024))  # 200 MB of zeros: ~200 KB zipped
        zf.writestr("series_hero/fine.png", make_image_bytes(5))
    tracemalloc.start()
    try:
        summary = images_import(path=archive)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.new == 1 and dict(summary.refused) == {"too_large": 1}
    assert peak < 20 * 1024 * 1024, f"peak {peak / 2**20:.0f} MB: a member was read whole"
    assert Image.objects.count() == 1
