"""The predict API end to end, against the real server, next to the raw predictor and a naive reference.

    .venv/bin/python bench/api.py [--rounds 5] [--threads 1] [--json out.json]

Builds a throwaway KYARA_DATA_DIR with a MobileNetV2 (32 classes, random weights with BatchNorm
calibrated on a few pictures: speed does not depend on the weight values), registers it as ``default``,
starts gunicorn on 127.0.0.1 (1 worker, 4 threads, as ``make serve``), and measures in interleaved
rounds:

- the raw predictor (decode with draft + eval transform + forward) on a 512×512 JPEG, in this process,
  and plain eager PyTorch with torchvision's usual transforms on the same picture (the naive reference);
- ``/api/v1/predict`` p50/p95 sequentially and with 4 concurrent clients (every upload is a new picture,
  so nothing comes from the result cache), ``/api/v1/predict_batch`` with 10 pictures, and a cache hit.

Bounded: a few hundred requests, a deadline (``--deadline``, default 300 s), 127.0.0.1 only. Other
processes on the machine move the absolute numbers; compare the ratios, which come from one run.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def anime_like_jpeg(seed: int, size: int = 512) -> bytes:
    """Flat shaded shapes with dark outlines on a gradient, light grain, JPEG quality 90."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    top, bottom = np.array([rng.randrange(256) for _ in range(3)]), np.array([rng.randrange(256) for _ in range(3)])
    canvas = (top * (1 - y) + bottom * y).repeat(size, axis=1)
    img = Image.fromarray(canvas.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randrange(size), rng.randrange(size)
        box = [x0, y0, x0 + rng.randrange(20, size // 2), y0 + rng.randrange(20, size // 2)]
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill, outline=(20, 20, 20), width=3)
    noise = np.random.default_rng(seed).integers(-6, 7, (size, size, 3))
    img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def process_cpu_ms(pid: int) -> float:
    """User + system CPU of a process and its children (gunicorn's workers) so far: unlike wall time,
    barely moved by other processes' load."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for one in [pid, *(int(c) for c in (children.read_text().split() if children.exists() else []))]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# --- Throwaway platform with one model ------------------------------------------------------------

def setup_platform(data_dir: Path, threads: int) -> dict:
    os.environ.update(KYARA_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="0",
                      KYARA_INFERENCE_THREADS=str(threads))
    import django

    django.setup()
    import torch
    from django.conf import settings
    from django.core.management import call_command

    from apps.inference.services import model_alias_set, model_version_register
    from apps.ml.architectures import architectures, count_parameters
    from apps.ml.artifacts import save_serving_artifact
    from apps.ml.images import decode_eval_crop
    from apps.ml.runtime import Normalizer

    call_command("migrate", verbosity=0)
    arch = architectures.get("mobilenet_v2")
    torch.manual_seed(0)
    model = arch.build(32, weights="none")
    calibration = Normalizer(arch.normalization)(
        [decode_eval_crop(anime_like_jpeg(9000 + i), image_size=224, max_pixels=10**8) for i in range(16)])
    with torch.no_grad():  # BatchNorm statistics from real-looking pictures keep activations well scaled
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        model(torch.from_numpy(calibration))
    model.eval()
    labels = [f"bench_character_{i:02d}" for i in range(32)]
    path = save_serving_artifact(Path(settings.ARTIFACTS_DIR) / "bench" / "mobilenet_v2.pt", model=model,
                                 architecture="mobilenet_v2", labels=labels, input_size=224,
                                 normalization=arch.normalization)
    version = model_version_register(name="bench-mobilenet_v2", architecture="mobilenet_v2", labels=labels,
                                     input_size=224, normalization=arch.normalization, artifact=path,
                                     parameters=count_parameters(model))
    model_alias_set(name="default", version=version, why="bench")
    return {"artifact": path, "normalization": arch.normalization, "parameters": version.parameters}


def start_server(data_dir: Path, port: int, threads: int, workers: int, batch_threads: int) -> subprocess.Popen:
    env = dict(os.environ, KYARA_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings.local",
               DJANGO_DEBUG="0", KYARA_LOG_LEVEL="WARNING", KYARA_THROTTLE_PREDICT_ANON="100000/min",
               KYARA_INFERENCE_THREADS=str(threads), KYARA_INFERENCE_BATCH_THREADS=str(batch_threads))
    log = open(data_dir / "gunicorn.log", "w")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", "4", "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


# --- A small keep-alive HTTP client (multipart built by hand: the client should cost little CPU) --------

class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (TimeoutError, ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise

    def post_files(self, path: str, field: str, images: list[bytes]) -> tuple[float, int, dict]:
        boundary = uuid.uuid4().hex
        parts = []
        for i, data in enumerate(images):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{i}.jpg"\r\n'
                         f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        started = time.perf_counter()
        status, raw = self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        elapsed = (time.perf_counter() - started) * 1000
        return elapsed, status, json.loads(raw) if raw.startswith(b"{") else {}


# --- The measurement -------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per model (server and raw)")
    parser.add_argument("--batch-threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="threads for a batch request (decode, forward); the setting's default")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds; the run stops measuring after")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    began = time.monotonic()
    load_before = os.getloadavg()

    data_dir = Path(tempfile.mkdtemp(prefix="kyara-bench-api-"))
    platform = setup_platform(data_dir, args.threads)
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from apps.ml.artifacts import load_serving_artifact
    from apps.ml.runtime import load_predictor

    torch.set_num_threads(args.threads)
    predictor = load_predictor(platform["artifact"], threads=args.threads, batch_threads=args.batch_threads)
    naive_model, _ = load_serving_artifact(platform["artifact"])
    naive_transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(**platform["normalization"])])

    def naive(data: bytes):
        with torch.no_grad():
            x = naive_transform(Image.open(io.BytesIO(data)).convert("RGB")).unsqueeze(0)
            return torch.softmax(naive_model(x), dim=1)

    fresh = iter([anime_like_jpeg(seed) for seed in range(args.rounds * 80 + 20)])
    probe = anime_like_jpeg(424242)
    port = (lambda s: (s.bind(("127.0.0.1", 0)), s.getsockname()[1], s.close())[1])(socket.socket())
    server = start_server(data_dir, port, args.threads, args.workers, args.batch_threads)
    samples = {k: [] for k in ("raw", "naive", "seq", "seq_server", "c4", "batch", "batch_server", "hit",
                               "raw_cpu", "naive_cpu")}
    server_cpu = {"seq": [0.0, 0], "c4": [0.0, 0], "batch": [0.0, 0], "hit": [0.0, 0]}  # ms, images
    c4_rates, seq_rates, errors = [], [], []
    try:
        client = Client(port)
        deadline = time.monotonic() + 90
        while True:  # wait until the server answers and is ready (the model loads on the first request)
            try:
                status, _ = client.request("GET", "/api/v1/health")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print((data_dir / "gunicorn.log").read_text()[-3000:])
                raise SystemExit("the server did not become ready")
            time.sleep(0.3)
        for _ in range(5):  # warm-up: first requests, first batch shapes
            client.post_files("/api/v1/predict", "file", [next(fresh)])
        client.post_files("/api/v1/predict_batch", "files", [next(fresh) for _ in range(10)])
        client.post_files("/api/v1/predict", "file", [probe])  # the cache-hit picture, now cached

        for round_no in range(args.rounds):
            if time.monotonic() - began > args.deadline:
                print(f"deadline reached after {round_no} rounds")
                break
            order = ["raw", "naive", "seq", "c4", "batch", "hit"]
            random.Random(round_no).shuffle(order)
            for part in order:
                cpu_before, count_before = process_cpu_ms(server.pid), len(samples.get(part, ()))
                if part == "raw":
                    for _ in range(10):
                        started, cpu = time.perf_counter(), time.thread_time()
                        predictor.predict([probe])
                        samples["raw"].append((time.perf_counter() - started) * 1000)
                        samples["raw_cpu"].append((time.thread_time() - cpu) * 1000)
                elif part == "naive":
                    for _ in range(10):
                        started, cpu = time.perf_counter(), time.thread_time()
                        naive(probe)
                        samples["naive"].append((time.perf_counter() - started) * 1000)
                        samples["naive_cpu"].append((time.thread_time() - cpu) * 1000)
                elif part == "seq":
                    started = time.perf_counter()
                    for _ in range(12):
                        elapsed, status, body = client.post_files("/api/v1/predict", "file", [next(fresh)])
                        (samples["seq"].append(elapsed), samples["seq_server"].append(body["time_ms"])) \
                            if status == 200 and not body["cached"] else errors.append(("seq", status, body))
                    seq_rates.append(12 / (time.perf_counter() - started))
                elif part == "c4":
                    pictures = [[next(fresh) for _ in range(8)] for _ in range(4)]
                    def run(mine: list[bytes], lock=threading.Lock()) -> None:
                        own = Client(port)
                        for data in mine:
                            elapsed, status, body = own.post_files("/api/v1/predict", "file", [data])
                            with lock:
                                (samples["c4"].append(elapsed) if status == 200 else errors.append(("c4", status, body)))

                    threads = [threading.Thread(target=run, args=(p,)) for p in pictures]
                    started = time.perf_counter()
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(timeout=120)
                    c4_rates.append(32 / (time.perf_counter() - started))
                elif part == "batch":
                    for _ in range(2):
                        elapsed, status, body = client.post_files("/api/v1/predict_batch", "files",
                                                                  [next(fresh) for _ in range(10)])
                        (samples["batch"].append(elapsed), samples["batch_server"].append(body["time_ms"])) \
                            if status == 200 else errors.append(("batch", status, body))
                elif part == "hit":
                    for _ in range(10):
                        elapsed, status, body = client.post_files("/api/v1/predict", "file", [probe])
                        samples["hit"].append(elapsed) if status == 200 and body["cached"] else \
                            errors.append(("hit", status, body))
                if part in server_cpu:
                    images = (len(samples[part]) - count_before) * (10 if part == "batch" else 1)
                    server_cpu[part][0] += process_cpu_ms(server.pid) - cpu_before
                    server_cpu[part][1] += images
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()

    med = {k: statistics.median(v) for k, v in samples.items() if v}
    result = {
        "backend": predictor.backend_name, "backend_choice_ms": predictor.info.get("choice_ms"),
        "threads": args.threads, "batch_threads": args.batch_threads, "workers": args.workers, "rounds": args.rounds,
        "raw_predictor_ms_p50": med["raw"], "naive_reference_ms_p50": med["naive"],
        "raw_speedup_vs_naive": med["naive"] / med["raw"],
        "predict_seq_ms_p50": med["seq"], "predict_seq_ms_p95": percentile(samples["seq"], 95),
        "predict_server_ms_p50": med["seq_server"], "predict_p50_over_raw": med["seq"] / med["raw"],
        "seq_req_per_s": statistics.median(seq_rates),
        "c4_ms_p50": med["c4"], "c4_ms_p95": percentile(samples["c4"], 95), "c4_req_per_s": statistics.median(c4_rates),
        "batch10_ms_p50": med["batch"], "batch_per_image_ms": med["batch"] / 10,
        "batch_per_image_gain_vs_single": med["seq"] / (med["batch"] / 10),
        "cache_hit_ms_p50": med["hit"], "cache_hit_ms_p95": percentile(samples["hit"], 95),
        "raw_predictor_cpu_ms_p50": med["raw_cpu"], "naive_reference_cpu_ms_p50": med["naive_cpu"],
        "raw_cpu_speedup_vs_naive": med["naive_cpu"] / med["raw_cpu"],
        "server_cpu_ms_per_image": {k: (v[0] / v[1] if v[1] else None) for k, v in server_cpu.items()},
        "errors": len(errors), "requests": sum(len(samples[k]) for k in ("seq", "c4", "hit")) + 10 * len(samples["batch"]),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "seconds": round(time.monotonic() - began, 1),
    }
    goals = [
        ("raw predictor >= 2.5x the naive reference", result["raw_speedup_vs_naive"] >= 2.5),
        ("/predict p50 <= 1.3x the raw predictor", result["predict_p50_over_raw"] <= 1.3),
        ("cache hit < 5 ms", result["cache_hit_ms_p50"] < 5),
        ("/predict_batch >= 1.5x per-image throughput of single requests", result["batch_per_image_gain_vs_single"] >= 1.5),
        ("4 clients: no errors, >= single-client throughput", not errors and result["c4_req_per_s"] >= result["seq_req_per_s"]),
    ]
    print(f"\nbench/api.py — backend {result['backend']} (choice {result['backend_choice_ms']}), "
          f"{args.threads} thread(s)/model ({args.batch_threads} for batches), gunicorn {args.workers} worker(s) × 4 threads, {args.rounds} rounds")
    print(f"  raw predictor (512×512 JPEG → top-k)  p50 {med['raw']:7.2f} ms")
    print(f"  naive eager + torchvision              p50 {med['naive']:7.2f} ms   → {result['raw_speedup_vs_naive']:.2f}x")
    print(f"  /predict sequential                    p50 {med['seq']:7.2f} ms  p95 {result['predict_seq_ms_p95']:.2f} ms"
          f"  (server {med['seq_server']:.2f} ms; {result['predict_p50_over_raw']:.2f}x raw; {result['seq_req_per_s']:.1f} req/s)")
    print(f"  /predict 4 concurrent clients          p50 {med['c4']:7.2f} ms  p95 {result['c4_ms_p95']:.2f} ms"
          f"  ({result['c4_req_per_s']:.1f} req/s)")
    print(f"  /predict_batch (10 images)             p50 {med['batch']:7.2f} ms  = {result['batch_per_image_ms']:.2f} ms/image"
          f"  ({result['batch_per_image_gain_vs_single']:.2f}x single)")
    print(f"  cache hit                              p50 {med['hit']:7.2f} ms  p95 {result['cache_hit_ms_p95']:.2f} ms")
    cpu = result["server_cpu_ms_per_image"]
    print(f"  CPU time (robust to other load): raw {med['raw_cpu']:.2f} ms vs naive {med['naive_cpu']:.2f} ms "
          f"→ {result['raw_cpu_speedup_vs_naive']:.2f}x; server per image: single {cpu['seq']:.2f}, "
          f"4 clients {cpu['c4']:.2f}, batch {cpu['batch']:.2f}, cache hit {cpu['hit']:.2f} ms")
    print(f"  errors {len(errors)} of {result['requests']} requests; load average before {load_before}, "
          f"after {result['load_average_after']} (other processes share these 2 cores)")
    for text, ok in goals:
        print(f"  [{'met ' if ok else 'MISS'}] {text}")
    if errors:
        print("  first errors:", errors[:3])
    if args.json:
        args.json.write_text(json.dumps({**result, "goals": dict(goals)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
