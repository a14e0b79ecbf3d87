"""Ingest throughput and near-duplicate lookup time as the library grows.

    .venv/bin/python bench/ingest.py [--images /tmp/data/pokemon32] [--sizes 1000,10000,100000,1000000]

Runs against a throwaway KYARA_DATA_DIR (SQLite, local media) so it never touches your data. Prints
images/s for ingest with and without near-duplicate detection, then the median and p95 time of one
near-duplicate lookup with 1k .. 1M stored hashes (synthetic rows, real index and query).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup(data_dir: str) -> None:
    os.environ["KYARA_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DJANGO_DEBUG"] = "0"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def load_files(path: Path | None, limit: int) -> list[bytes]:
    if path and path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".gif", ".webp"})
        return [p.read_bytes() for p in files[:limit]]
    sys.path.insert(0, str(ROOT / "tests"))
    from tests.conftest import make_image_bytes

    return [make_image_bytes(seed, size=(256, 256), fmt="JPEG", quality=90) for seed in range(limit)]


def bench_ingest(files: list[bytes], policy: str) -> float:
    from apps.characters.models import Image
    from apps.characters.services import image_ingest

    Image.objects.all().delete()
    start = time.perf_counter()
    for data in files:
        image_ingest(data=data, source_kind="import", near_duplicate_policy=policy, min_side=16)
    return len(files) / (time.perf_counter() - start)


def fill(total: int, rng: random.Random) -> None:
    from apps.characters.models import Image
    from apps.characters.phash import bands, to_signed

    have = Image.objects.count()
    batch = []
    for n in range(have, total):
        value = to_signed(rng.getrandbits(64))
        b0, b1, b2, b3 = bands(value)
        batch.append(Image(sha256=f"{n:064x}", file=f"synthetic/{n}.jpg", format="JPEG", width=256, height=256,
                           bytes=1, phash=value, phash_b0=b0, phash_b1=b1, phash_b2=b2, phash_b3=b3,
                           source_kind="import"))
        if len(batch) == 20000:
            Image.objects.bulk_create(batch)
            batch.clear()
    Image.objects.bulk_create(batch)


def bench_lookup(sizes: list[int], queries: int) -> list[tuple[int, float, float, int]]:
    from apps.characters.models import Image
    from apps.characters.selectors import near_duplicates_of_hash

    rng = random.Random(0)
    Image.objects.all().delete()
    rows = []
    for size in sizes:
        t0 = time.perf_counter()
        fill(size, rng)
        fill_s = time.perf_counter() - t0
        probes = [rng.getrandbits(64) - (1 << 63) for _ in range(queries)]
        times = []
        found = 0
        for value in probes:
            start = time.perf_counter()
            found += len(near_duplicates_of_hash(value, max_distance=6))
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        rows.append((size, statistics.median(times), times[int(0.95 * (len(times) - 1))], found))
        print(f"  {size:>9,} hashes: lookup p50 {rows[-1][1]:.2f} ms, p95 {rows[-1][2]:.2f} ms "
              f"(filled in {fill_s:.0f}s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path("/tmp/data/pokemon32"))
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kyara-bench-") as data_dir:
        setup(data_dir)
        files = load_files(args.images, args.count)
        print(f"ingest of {len(files)} files ({'from ' + str(args.images) if args.images.is_dir() else 'generated'}):")
        without = bench_ingest(files, "skip")
        with_nd = bench_ingest(files, "keep")
        print(f"  without near-duplicate detection: {without:.1f} images/s")
        print(f"  with near-duplicate detection:    {with_nd:.1f} images/s")
        print("near-duplicate lookup (Hamming <= 6, 4 indexed 16-bit bands):")
        bench_lookup([int(s) for s in args.sizes.split(",")], args.queries)


if __name__ == "__main__":
    main()
