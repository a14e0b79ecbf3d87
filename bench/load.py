"""A load test of the whole web server with locust: headless, bounded, 127.0.0.1 only.

    .venv/bin/python bench/load.py [--users 8] [--run-time 60] [--json out.json]

Builds a throwaway KYARA_DATA_DIR (8 characters with 6 images each, a frozen dataset version, a tiny ``simple``
model with random weights registered and promoted to ``default``, a staff token), starts gunicorn as
``make serve`` does (production settings, 1 worker x 4 threads, on a free port of 127.0.0.1), warms the model with
one request, then runs locust against it: anonymous and token users mixing /predict (new pictures, which the
server decodes and runs, and pictures seen before, answered from the result cache), /predict_batch (4 new
pictures), the list endpoints, /health and the pages.
It prints per endpoint the requests, the failures, p50 and p95 (ms) and requests per second, and exits 1 when
any request failed.

The throttles are raised for the run (KYARA_THROTTLE_ANON, _USER, _PREDICT_ANON, _PREDICT_USER, _MODEL_LOAD to
10^7 per minute/hour): their defaults would answer 429 to eight busy clients from one address within seconds,
which measures the throttle, not the server. Everything else is the default.

Run by locust, this same file only defines the users (KYARA_LOAD_LOCUSTFILE=1); run by Python, it drives.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = 48
BATCH = 4
CHARACTERS = 8
UNLIMITED = "10000000/min"
MAX_USERS, MAX_SECONDS = 64, 600  # bounds a typo cannot pass


# --- The users (imported by locust) ---------------------------------------------------------------------

if os.environ.get("KYARA_LOAD_LOCUSTFILE") == "1":
    from locust import HttpUser, between, task

    _POOL = sorted(Path(os.environ["KYARA_LOAD_IMAGES"]).glob("*.jpg"))
    _IMAGES = [path.read_bytes() for path in _POOL]
    _SLUGS = json.loads(os.environ["KYARA_LOAD_SLUGS"])
    _LISTS = ["/api/v1/images/", "/api/v1/characters/", "/api/v1/series/", "/api/v1/models/",
              "/api/v1/dataset-versions/", "/api/v1/training-jobs/", "/api/v1/crawl-jobs/", "/api/v1/evaluations/"]
    _PAGES = ["/", "/ui/predict/", "/ui/dataset/", "/ui/models/", "/ui/training/", "/ui/crawls/"]

    def _fresh() -> bytes:
        """A picture of the pool with random bytes after its end marker: the same pixels, a new sha256, so the
        server decodes and runs it instead of answering from the result cache."""
        return random.choice(_IMAGES) + os.urandom(16)

    class Visitor(HttpUser):
        """An anonymous client: mostly predictions, some browsing."""

        wait_time = between(0.05, 0.25)
        headers: dict = {}

        @task(4)
        def predict(self):
            self.client.post("/api/v1/predict", files={"file": ("picture.jpg", _fresh(), "image/jpeg")},
                             headers=self.headers, name="POST /api/v1/predict (new picture)")

        @task(2)
        def predict_again(self):
            data = random.choice(_IMAGES)
            self.client.post("/api/v1/predict", files={"file": ("picture.jpg", data, "image/jpeg")},
                             headers=self.headers, name="POST /api/v1/predict (seen before)")

        @task(1)
        def predict_batch(self):
            files = [("files", (f"p{i}.jpg", _fresh(), "image/jpeg")) for i in range(BATCH)]
            self.client.post("/api/v1/predict_batch", files=files, headers=self.headers,
                             name=f"POST /api/v1/predict_batch ({BATCH} new)")

        @task(3)
        def list_endpoint(self):
            path = random.choice(_LISTS)
            self.client.get(path, headers=self.headers, name=f"GET {path}")

        @task(1)
        def health(self):
            self.client.get("/api/v1/health", headers=self.headers, name="GET /api/v1/health")

        @task(2)
        def page(self):
            path = random.choice(_PAGES)
            self.client.get(path, headers=self.headers, name=f"GET {path}")

        @task(1)
        def character_page(self):
            self.client.get(f"/ui/characters/{random.choice(_SLUGS)}/", headers=self.headers,
                            name="GET /ui/characters/<slug>/")

    class TokenClient(Visitor):
        """A signed-in API client (a script with a staff token): the same mix, as a user."""

        weight = 1
        headers = {"Authorization": f"Token {os.environ.get('KYARA_LOAD_TOKEN', '')}"}

    Visitor.weight = 3


# --- The driver -------------------------------------------------------------------------------------

def picture(seed: int, size: int = 384) -> bytes:
    """Shapes with outlines on a gradient, JPEG quality 90: bench/api.py's stand-in for a character picture."""
    sys.path.insert(0, str(ROOT))
    from bench.api import anime_like_jpeg

    return anime_like_jpeg(seed, size)


def server_env(data_dir: Path) -> dict[str, str]:
    """make serve's environment (production settings, generated secret, plain HTTP on loopback), throttles raised."""
    return {**os.environ, "KYARA_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "KYARA_LOCAL_SECRET": "1", "KYARA_HTTPS": "0", "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "KYARA_LOG_LEVEL": "WARNING", "KYARA_RUNTIME_CHOOSE_ON_REGISTER": "0",
            "KYARA_THROTTLE_ANON": UNLIMITED, "KYARA_THROTTLE_USER": UNLIMITED,
            "KYARA_THROTTLE_PREDICT_ANON": UNLIMITED, "KYARA_THROTTLE_PREDICT_USER": UNLIMITED,
            "KYARA_THROTTLE_MODEL_LOAD": "10000000/hour"}


def setup_platform(data_dir: Path) -> dict:
    """Characters with images, a frozen dataset version, a tiny model promoted to default, a staff token."""
    os.environ.update({k: v for k, v in server_env(data_dir).items() if k.startswith(("KYARA_", "DJANGO_"))})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import torch
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from apps.characters.services import (
        character_get_or_create,
        dataset_version_freeze,
        image_ingest,
        series_get_or_create,
    )
    from apps.inference.services import model_alias_set, model_version_register
    from apps.ml.architectures import architectures, count_parameters
    from apps.ml.artifacts import save_serving_artifact

    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    series = series_get_or_create(slug="bench", name="Bench")
    slugs = []
    for c in range(CHARACTERS):
        character = character_get_or_create(series=series, name=f"Character {c}")
        slugs.append(character.slug)
        for i in range(6):
            image_ingest(data=picture(1000 + c * 10 + i, size=160), source_kind="import", character=character)
    dataset = dataset_version_freeze(name="bench-v1", min_images=1)
    arch = architectures.get("simple")
    torch.manual_seed(0)
    model = arch.build(CHARACTERS, weights="none").eval()
    labels = sorted(slugs)
    path = save_serving_artifact(Path(settings.ARTIFACTS_DIR) / "bench" / "simple.pt", model=model,
                                 architecture="simple", labels=labels, input_size=arch.input_size,
                                 normalization=arch.normalization)
    version = model_version_register(name="bench-simple", architecture="simple", labels=labels,
                                     input_size=arch.input_size, normalization=arch.normalization, artifact=path,
                                     parameters=count_parameters(model), dataset_version=dataset)
    model_alias_set(name="default", version=version, why="load bench")
    staff = get_user_model().objects.create_user("bench-staff", password=os.urandom(16).hex(), is_staff=True)
    return {"slugs": slugs, "token": Token.objects.create(user=staff).key, "model": version.name}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    log = open(data_dir / "gunicorn.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "4", "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=server_env(data_dir), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}; see {log.name}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not listen within 90 s; see {log.name}") from None
            time.sleep(0.2)


def warm_up(port: int, image: bytes) -> None:
    """One prediction loads the model (and imports the runtime): not part of what is measured."""
    import requests

    for _ in range(60):
        try:
            response = requests.post(f"http://127.0.0.1:{port}/api/v1/predict", files={"file": ("w.jpg", image)},
                                     timeout=120)
            if response.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise SystemExit(f"the server never answered a prediction: {response.status_code} {response.text[:300]}")


def read_stats(prefix: Path) -> tuple[list[dict], list[dict]]:
    def number(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return 0.0

    rows = []
    with open(f"{prefix}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({"name": row["Name"], "requests": int(row["Request Count"]),
                         "failures": int(row["Failure Count"]), "p50_ms": number(row["50%"]),
                         "p95_ms": number(row["95%"]), "rps": round(number(row["Requests/s"]), 2)})
    with open(f"{prefix}_failures.csv", newline="") as handle:
        failures = [{"name": f"{row['Method']} {row['Name']}", "error": row["Error"], "count": int(row["Occurrences"])}
                    for row in csv.DictReader(handle)]
    return rows, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=8, help=f"concurrent locust users (at most {MAX_USERS})")
    parser.add_argument("--run-time", type=int, default=60, help=f"seconds of load (at most {MAX_SECONDS})")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway KYARA_DATA_DIR")
    args = parser.parse_args()
    if not 1 <= args.users <= MAX_USERS or not 1 <= args.run_time <= MAX_SECONDS:
        parser.error(f"--users 1..{MAX_USERS} and --run-time 1..{MAX_SECONDS}")
    locust = Path(sys.executable).with_name("locust")
    if not locust.exists():
        raise SystemExit("locust is not installed: .venv/bin/pip install -r requirements-dev.txt")

    data_dir = Path(tempfile.mkdtemp(prefix="kyara-bench-load-"))
    server = None
    try:
        world = setup_platform(data_dir)
        pool = data_dir / "pool"
        pool.mkdir()
        images = [picture(seed) for seed in range(IMAGES)]
        for seed, data in enumerate(images):
            (pool / f"{seed:03d}.jpg").write_bytes(data)
        port = free_port()
        server = start_server(data_dir, port)
        warm_up(port, picture(9999))
        prefix = data_dir / "locust"
        command = [str(locust), "-f", __file__, "--headless", "--host", f"http://127.0.0.1:{port}",
                   "--users", str(args.users), "--spawn-rate", str(args.users), "--run-time", f"{args.run_time}s",
                   "--stop-timeout", "10", "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]
        env = {**os.environ, "KYARA_LOAD_LOCUSTFILE": "1", "KYARA_LOAD_IMAGES": str(pool),
               "KYARA_LOAD_SLUGS": json.dumps(world["slugs"]), "KYARA_LOAD_TOKEN": world["token"]}
        load_before = os.getloadavg()[0]
        began = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=args.run_time + 120)
        seconds = time.monotonic() - began
        if not Path(f"{prefix}_stats.csv").exists():
            raise SystemExit(f"locust wrote no statistics (exit {done.returncode}):\n{done.stderr[-3000:]}")
        rows, failures = read_stats(prefix)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    total = next((row for row in rows if row["name"] == "Aggregated"), None)
    print(f"\nlocust: {args.users} users for {args.run_time} s against gunicorn (1 worker x 4 threads, production "
          f"settings, throttles raised to {UNLIMITED}) on 127.0.0.1; model {world['model']}; {os.cpu_count()} CPUs, "
          f"load average {load_before:.2f} before the run\n")
    print(f"{'endpoint':44} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7}")
    for row in rows:
        print(f"{row['name']:44} {row['requests']:9d} {row['failures']:7d} {row['p50_ms']:8.0f} {row['p95_ms']:8.0f} "
              f"{row['rps']:7.2f}")
    for failure in failures:
        print(f"FAILED {failure['count']}x {failure['name']}: {failure['error']}")
    result = {"users": args.users, "run_time_s": args.run_time, "wall_s": round(seconds, 1), "endpoints": rows,
              "failures": failures, "failed_requests": total["failures"] if total else None,
              "throttles": UNLIMITED, "cpus": os.cpu_count(), "load_before": load_before}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if total and total["failures"] == 0 and total["requests"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
