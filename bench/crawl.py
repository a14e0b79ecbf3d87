"""Crawl throughput against a local Danbooru-style server: accepted images/s and time spent in ingest.

    .venv/bin/python bench/crawl.py [--images 200] [--latency-ms 20] [--size 256]

Runs against a throwaway KYARA_DATA_DIR (SQLite, local media) and a server on 127.0.0.1 only. Every
request (listing pages and images) waits ``--latency-ms`` before answering. Each run crawls a fresh
set of images (new post ids and pixels), once with 1 download thread and once with the default pool
(KYARA_CRAWL_THREADS). Politeness is opened up for the bench (rate 1000/s, 16 per host) so the pipeline,
not the politeness limit, is measured; a real site runs at its declared rate.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import setup  # noqa: E402 - the same throwaway KYARA_DATA_DIR and migrate


class Site:
    """Posts ``first_id .. first_id + count - 1`` of one query, newest first, each after ``latency``."""

    def __init__(self, *, images: dict[int, bytes], latency: float) -> None:
        self.images = images
        self.latency = latency
        self.requests = 0
        self.lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body meet the client's delayed ACK (+40 ms)

            def log_message(self, *args):
                pass

            def do_GET(self):
                with site.lock:
                    site.requests += 1
                time.sleep(site.latency)
                parts = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/posts.json":
                    body = json.dumps(site.listing(params.get("page", "1"), int(params.get("limit", 100)),
                                                  self.server.root)).encode()
                elif parts.path.startswith("/img/"):
                    body = site.images.get(int(parts.path.rsplit("/", 1)[-1].split(".")[0]), b"")
                else:
                    body = b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.root = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def root(self) -> str:
        return self.server.root

    def listing(self, page: str, limit: int, root: str) -> list[dict]:
        ids = sorted(self.images, reverse=True)
        if page.startswith("b"):
            ids = [i for i in ids if i < int(page[1:])][:limit]
        else:
            start = (int(page) - 1) * limit
            ids = ids[start:start + limit]
        return [{"id": i, "file_url": f"{root}/img/{i}.jpg", "tag_string": "bench", "image_width": 256,
                 "image_height": 256, "rating": "g"} for i in ids]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def crawl_once(*, first_id: int, count: int, size: int, latency: float, threads: int | None, label: str) -> dict:
    from django.conf import settings

    from apps.crawling.services import crawl_job_create, crawl_job_run
    from tests.conftest import make_image_bytes

    images = {first_id + i: make_image_bytes(first_id + i, size=(size, size), fmt="JPEG", quality=90)
              for i in range(count)}
    site = Site(images=images, latency=latency)
    settings.KYARA_SOURCE_ROOTS = {"danbooru": site.root}
    try:
        job = crawl_job_create(source="danbooru", query=f"bench_{first_id}", quota=count, threads=threads,
                               max_pages=count // 100 + 3, origin="cli", queue=False)
        started = time.perf_counter()
        job = crawl_job_run(job_id=job.pk)
        wall = time.perf_counter() - started
    finally:
        site.close()
    pool = job.threads or min(settings.KYARA_CRAWL_THREADS, 16)
    return {
        "run": label, "threads": pool, "status": job.status, "accepted": job.accepted,
        "near_duplicates": job.near_duplicates, "errors": job.errors, "requests": site.requests,
        "seconds": round(wall, 2), "accepted_per_s": round(job.accepted / wall, 1),
        "ingest_fraction": round(job.ingest_seconds / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=256, help="side of the generated JPEGs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kyara-bench-crawl-") as data_dir:
        setup(data_dir)
        from django.conf import settings

        settings.KYARA_CRAWL_ALLOW_PRIVATE = ["127.0.0.1/32"]
        settings.KYARA_CRAWL_POLITENESS = {"danbooru": {"rate": 1000, "concurrency": 16}}
        settings.KYARA_CRAWL_JITTER = 0.0
        latency = args.latency_ms / 1000
        rows = [
            crawl_once(first_id=1_000, count=args.images, size=args.size, latency=latency, threads=1,
                       label="1 thread"),
            crawl_once(first_id=100_000, count=args.images, size=args.size, latency=latency, threads=None,
                       label="default pool"),
        ]
    print(f"crawl bench: {args.images} images of {args.size}px, {args.latency_ms:.0f} ms added per request")
    for row in rows:
        print(f"  {row['run']:<13} threads={row['threads']:<2} accepted={row['accepted']:<4} "
              f"{row['seconds']:>6.2f}s  {row['accepted_per_s']:>6.1f} accepted/s  "
              f"ingest {row['ingest_fraction']:.0%} of the time  ({row['requests']} requests, "
              f"{row['near_duplicates']} near-duplicates, {row['errors']} errors)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
