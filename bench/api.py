"""The serving runtimes of this machine, and the predict API end to end, next to a naive reference.

    .venv/bin/python bench/api.py [--data /tmp/data/pokemon32] [--rounds 5] [--threads 1] [--json out.json]
                                  [--check-baseline /path/to/an/older/checkout]

Builds a throwaway KYARA_DATA_DIR the way a user would: ``import_images`` of ``--data`` (class folders; without
one, generated pictures of 32 classes), ``freeze_dataset``, then a MobileNetV2 at 224 px (no pretrained
weights here: random features, BatchNorm calibrated and the head fitted on the training split, so its answers
have real margins), registered with that dataset version and promoted to ``default``. Then:

1. **Candidates**: ``services.model_version_runtime_choose`` judges every runtime this machine has (eager
   PyTorch, ONNX Runtime fp32, OpenVINO fp32/bf16, int8, CUDA fp16) on the version's validation images and
   times it: forward ms at batch 1 and 10, top-1 agreement with eager fp32, accuracy delta; the fastest
   allowed one is chosen and recorded on the version (refused ones are timed too, to show what they cost).
2. **End to end**, in interleaved rounds: the raw predictor (decode with draft + eval transform + forward on
   the recorded runtime) on a 512×512 JPEG, in this process, and plain eager PyTorch with torchvision's usual
   transforms on the same picture (the naive reference); gunicorn on 127.0.0.1 (1 worker, 4 threads, as
   ``make serve``) loading the recorded choice without timing anything: ``/api/v1/predict`` p50/p95
   sequentially and with 4 concurrent clients (every upload a new picture, so nothing comes from the result
   cache), ``/api/v1/predict_batch`` with 10 pictures, a cache hit; and a second server with in-process
   micro-batching (``KYARA_MICROBATCH``) under the same 4 clients.
3. ``manage.py check`` wall time (median of 5), and with ``--check-baseline`` the same in an older checkout,
   interleaved: the start-up cost of every process.

Bounded: a few hundred requests, a deadline (``--deadline``, default 900 s), 127.0.0.1 only. Other processes
on the machine move the absolute numbers; compare the ratios, which come from one run.
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


def anime_like_jpeg(seed: int, size: int = 512, palette: int | None = None) -> bytes:
    """Flat shaded shapes with dark outlines on a gradient, light grain, JPEG quality 90. ``palette``: the
    background colours come from it (a "character"), the shapes from ``seed``."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    colours = random.Random(f"palette{palette}") if palette is not None else rng
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    top = np.array([colours.randrange(256) for _ in range(3)])
    bottom = np.array([colours.randrange(256) for _ in range(3)])
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

def synthetic_classes(folder: Path, classes: int = 32, per_class: int = 24) -> Path:
    """Class folders of generated pictures, told apart by their palette and shapes (when no --data)."""
    for c in range(classes):
        target = folder / f"bench_character{c:02d}"
        target.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (target / f"{i}.jpg").write_bytes(anime_like_jpeg(c * 1000 + i, size=256, palette=c))
    return folder


def fit_head(model, crops, labels: list[int], normalization: dict, classes: int) -> None:
    """BatchNorm statistics from the training pictures, then the linear head fitted on the frozen features."""
    import torch

    from apps.ml.runtime import Normalizer

    normalize = Normalizer(normalization)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        for start in range(0, min(len(crops), 256), 32):
            model.features(torch.from_numpy(normalize(crops[start:start + 32])))
        model.eval()
        features = torch.cat([torch.flatten(torch.nn.functional.adaptive_avg_pool2d(
            model.features(torch.from_numpy(normalize(crops[start:start + 32]))), 1), 1)
            for start in range(0, len(crops), 32)])
    mean, std = features.mean(0), features.std(0) + 1e-6
    head = torch.nn.Linear(features.shape[1], classes)
    target = torch.tensor(labels)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(400):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head((features - mean) / std), target).backward()
        optimizer.step()
    with torch.no_grad():  # fold the standardisation into the served head
        linear = model.classifier[-1]
        linear.weight.copy_(head.weight / std)
        linear.bias.copy_(head.bias - (head.weight * (mean / std)).sum(1))


def setup_platform(data_dir: Path, threads: int, batch_threads: int, data: Path, *, artifact: Path | None = None,
                   image_size: int | None = None, guard_split: str = "val") -> dict:
    os.environ.update(KYARA_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="0",
                      KYARA_INFERENCE_THREADS=str(threads), KYARA_INFERENCE_BATCH_THREADS=str(batch_threads),
                      KYARA_MIN_IMAGE_SIDE="16", KYARA_RUNTIME_CHOOSE_ON_REGISTER="0", KYARA_LOG_LEVEL="WARNING")
    import django

    django.setup()
    import torch
    from django.conf import settings
    from django.core.management import call_command

    from apps.characters.models import DatasetVersion
    from apps.core.storage import read_stored
    from apps.inference.services import model_alias_set, model_version_register, model_version_runtime_choose
    from apps.ml.architectures import architectures, count_parameters
    from apps.ml.artifacts import save_serving_artifact
    from apps.ml.images import decode_eval_crop

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    call_command("import_images", str(data), stdout=io.StringIO())
    call_command("freeze_dataset", name="bench", stdout=io.StringIO())  # the defaults, as bench/accuracy.py
    dataset = DatasetVersion.objects.get(name="bench")
    items = list(dataset.items.select_related("image", "character").order_by("id"))
    labels = sorted({item.character.slug for item in items})
    index = {slug: i for i, slug in enumerate(labels)}
    train = [item for item in items if item.split == "train"]

    arch = architectures.get("mobilenet_v2")
    torch.manual_seed(0)
    torch.set_num_threads(max(threads, batch_threads))
    if artifact is not None:  # a trained model (e.g. kept by bench/accuracy.py --keep), served at image_size
        from apps.ml.artifacts import load_serving_artifact

        model, meta = load_serving_artifact(artifact)
        if set(meta.labels) - set(labels):
            raise SystemExit(f"{artifact} knows classes the dataset lacks: {sorted(set(meta.labels) - set(labels))[:5]}")
        labels, size = list(meta.labels), image_size or meta.input_size
    else:
        size = image_size or 224
        model = arch.build(len(labels), weights="none")
        crops = [decode_eval_crop(read_stored(item.image.file.name), image_size=size, max_pixels=10**8) for item in train]
        fit_head(model, crops, [index[item.character.slug] for item in train], arch.normalization, len(labels))
    model.eval()
    torch.set_num_threads(threads)  # eager PyTorch is timed with the serving threads, as the naive reference
    path = save_serving_artifact(Path(settings.ARTIFACTS_DIR) / "bench" / "mobilenet_v2.pt", model=model,
                                 architecture="mobilenet_v2", labels=labels, input_size=size,
                                 normalization=arch.normalization)
    version = model_version_register(name="bench-mobilenet_v2", architecture="mobilenet_v2", labels=labels,
                                     input_size=size, normalization=arch.normalization, artifact=path,
                                     parameters=count_parameters(model), dataset_version=dataset)
    prepared = time.perf_counter() - started
    record = model_version_runtime_choose(version, where="bench", again=True, time_refused=True,
                                          guard_split=guard_split)
    model_alias_set(name="default", version=version, why="bench")
    splits = {split: sum(1 for item in items if item.split == split) for split in ("train", "val", "test")}
    return {"served": path, "sha256": version.artifact_sha256, "normalization": arch.normalization,
            "parameters": version.parameters, "record": record, "classes": len(labels), "splits": splits,
            "data": str(data), "prepare_seconds": round(prepared, 1), "input_size": size,
            "artifact": str(artifact) if artifact else None}


def manage_check_ms(tree: Path, data_dir: Path) -> float:
    env = dict(os.environ, KYARA_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings.local")
    started = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "check"], cwd=tree, env=env, check=True, capture_output=True)
    return (time.perf_counter() - started) * 1000


def start_server(data_dir: Path, port: int, threads: int, workers: int, batch_threads: int, *,
                 microbatch: bool = False, window_ms: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, KYARA_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings.local",
               DJANGO_DEBUG="0", KYARA_LOG_LEVEL="WARNING", KYARA_THROTTLE_PREDICT_ANON="100000/min",
               KYARA_INFERENCE_THREADS=str(threads), KYARA_INFERENCE_BATCH_THREADS=str(batch_threads),
               KYARA_MICROBATCH="1" if microbatch else "0", KYARA_MICROBATCH_WINDOW_MS=str(window_ms))
    log = open(data_dir / f"gunicorn-{port}.log", "w")
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

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(client: Client, server: subprocess.Popen, log: Path) -> dict:
    """Until /health says ready (the model loads on the first request)."""
    deadline = time.monotonic() + 180
    while True:
        try:
            status, raw = client.request("GET", "/api/v1/health")
            body = json.loads(raw) if raw.startswith(b"{") else {}
            if status == 200:
                return body
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            print(log.read_text()[-3000:])
            raise SystemExit("the server did not become ready")
        time.sleep(0.3)


def print_candidates(record: dict) -> None:
    from apps.inference.management.commands.choose_runtime import candidates_table

    machine = record["machine"]
    print(f"\nRuntime candidates on {machine['cpu']} ({machine['cores']} cores, flags {' '.join(machine['flags'])}"
          f"{', GPUs ' + ', '.join(machine['gpus']) if machine['gpus'] else ', no GPU'}): forward ms of a batch "
          f"(median), judged on {record['validation_images']} {record['guard_split']} images (eager fp32 accuracy "
          f"{record['reference_accuracy']:.2%}); measured in {record['seconds']:.0f} s")
    for line in candidates_table(record):
        print("  " + line)
    print(f"  chosen: {record['why']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/data/pokemon32" if Path("/tmp/data/pokemon32").is_dir() else "",
                        help="class folders to import (default /tmp/data/pokemon32 if there; '' for generated ones)")
    parser.add_argument("--generated", default="32x24", help="generated classes x pictures each (without --data)")
    parser.add_argument("--artifact", type=Path, help="a trained serving artifact of --data's classes (instead of "
                        "random features with a fitted head), e.g. one bench/accuracy.py --keep left")
    parser.add_argument("--image-size", type=int, help="serve at this input size (default: the artifact's, else 224)")
    parser.add_argument("--guard-split", default="val", choices=("val", "test"),
                        help="judge the candidates on this split (test for a model refit on train + val)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per model (server and raw)")
    parser.add_argument("--batch-threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="threads for a batch request (decode, forward); the setting's default")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    parser.add_argument("--microbatch-window-ms", type=float, default=0.0,
                        help="the micro-batching server's gathering window (0: what is already waiting)")
    parser.add_argument("--check-baseline", type=Path, help="an older checkout: its manage.py check, interleaved")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds; the run stops measuring after")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    began = time.monotonic()
    load_before = os.getloadavg()

    data_dir = Path(tempfile.mkdtemp(prefix="kyara-bench-api-"))
    data = Path(args.data) if args.data else synthetic_classes(data_dir / "generated",
                                                               *map(int, args.generated.split("x")))
    platform = setup_platform(data_dir, args.threads, args.batch_threads, data, artifact=args.artifact,
                              image_size=args.image_size, guard_split=args.guard_split)
    record = platform["record"]
    print_candidates(record)

    import torch
    from PIL import Image
    from torchvision import transforms as T

    from apps.inference.loading import load_serving_predictor
    from apps.ml.artifacts import load_serving_artifact

    torch.set_num_threads(args.threads)
    predictor = load_serving_predictor(platform["served"], expected_sha256=platform["sha256"], runtime=record)
    naive_model, _ = load_serving_artifact(platform["served"])
    naive_model.eval()
    size = platform["input_size"]
    naive_transform = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(),
                                 T.Normalize(**platform["normalization"])])

    def naive(data: bytes):
        with torch.no_grad():
            x = naive_transform(Image.open(io.BytesIO(data)).convert("RGB")).unsqueeze(0)
            return torch.softmax(naive_model(x), dim=1)

    fresh = iter([anime_like_jpeg(seed) for seed in range(args.rounds * 120 + 40)])
    probe = anime_like_jpeg(424242)
    port, port_mb = free_port(), free_port()
    server = start_server(data_dir, port, args.threads, args.workers, args.batch_threads)
    server_mb = start_server(data_dir, port_mb, args.threads, args.workers, args.batch_threads, microbatch=True,
                             window_ms=args.microbatch_window_ms)
    parts = ("raw", "naive", "seq", "seq_server", "c4", "batch", "batch_server", "hit", "raw_cpu", "naive_cpu",
             "mb_seq", "mb_c4", "check", "check_baseline")
    samples = {k: [] for k in parts}
    server_cpu = {"seq": [0.0, 0], "c4": [0.0, 0], "batch": [0.0, 0], "hit": [0.0, 0]}  # ms, images
    c4_rates, seq_rates, mb_c4_rates, mb_seq_rates, errors = [], [], [], [], []
    health = {}
    try:
        client, client_mb = Client(port), Client(port_mb)
        health = wait_ready(client, server, data_dir / f"gunicorn-{port}.log")
        wait_ready(client_mb, server_mb, data_dir / f"gunicorn-{port_mb}.log")
        for one in (client, client_mb):
            for _ in range(5):  # warm-up: first requests, first batch shapes
                one.post_files("/api/v1/predict", "file", [next(fresh)])
            one.post_files("/api/v1/predict_batch", "files", [next(fresh) for _ in range(10)])
        client.post_files("/api/v1/predict", "file", [probe])  # the cache-hit picture, now cached

        def sequential(own: Client, into: str, rates: list, server_key: str | None = None) -> None:
            started = time.perf_counter()
            for _ in range(12):
                elapsed, status, body = own.post_files("/api/v1/predict", "file", [next(fresh)])
                if status == 200 and not body["cached"]:
                    samples[into].append(elapsed)
                    if server_key:
                        samples[server_key].append(body["time_ms"])
                else:
                    errors.append((into, status, body))
            rates.append(12 / (time.perf_counter() - started))

        def concurrent(at: int, into: str, rates: list) -> None:
            pictures = [[next(fresh) for _ in range(8)] for _ in range(4)]

            def run(mine: list[bytes], lock=threading.Lock()) -> None:
                own = Client(at)
                for data in mine:
                    elapsed, status, body = own.post_files("/api/v1/predict", "file", [data])
                    with lock:
                        (samples[into].append(elapsed) if status == 200 else errors.append((into, status, body)))

            threads = [threading.Thread(target=run, args=(p,)) for p in pictures]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            rates.append(32 / (time.perf_counter() - started))

        for round_no in range(args.rounds):
            if time.monotonic() - began > args.deadline:
                print(f"deadline reached after {round_no} rounds")
                break
            order = ["raw", "naive", "seq", "c4", "batch", "hit", "mb_seq", "mb_c4", "check"]
            random.Random(round_no).shuffle(order)
            for part in order:
                cpu_before, count_before = process_cpu_ms(server.pid), len(samples.get(part, ()))
                if part == "raw":
                    for _ in range(10):
                        started, cpu = time.perf_counter(), time.process_time()
                        predictor.predict([probe])
                        samples["raw"].append((time.perf_counter() - started) * 1000)
                        samples["raw_cpu"].append((time.process_time() - cpu) * 1000)
                elif part == "naive":
                    for _ in range(10):
                        started, cpu = time.perf_counter(), time.process_time()
                        naive(probe)
                        samples["naive"].append((time.perf_counter() - started) * 1000)
                        samples["naive_cpu"].append((time.process_time() - cpu) * 1000)
                elif part == "seq":
                    sequential(client, "seq", seq_rates, "seq_server")
                elif part == "mb_seq":
                    sequential(client_mb, "mb_seq", mb_seq_rates)
                elif part == "c4":
                    concurrent(port, "c4", c4_rates)
                elif part == "mb_c4":
                    concurrent(port_mb, "mb_c4", mb_c4_rates)
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
                elif part == "check":  # the start-up of every manage.py process, and of an older tree's
                    trees = [("check", ROOT)] + ([("check_baseline", args.check_baseline)] if args.check_baseline else [])
                    random.Random(round_no).shuffle(trees)
                    for key, tree in trees:
                        samples[key].append(manage_check_ms(tree, data_dir))
                if part in server_cpu:
                    images = (len(samples[part]) - count_before) * (10 if part == "batch" else 1)
                    server_cpu[part][0] += process_cpu_ms(server.pid) - cpu_before
                    server_cpu[part][1] += images
        _, raw_health = client.request("GET", "/api/v1/health")
        health = json.loads(raw_health)
    finally:
        for one in (server, server_mb):
            one.terminate()
            try:
                one.wait(timeout=15)
            except subprocess.TimeoutExpired:
                one.kill()

    med = {k: statistics.median(v) for k, v in samples.items() if v}
    served = (health.get("loaded_models") or [{}])[0]
    result = {
        "cpu": record["machine"]["cpu"], "machine": record["machine"], "data": platform["data"],
        "classes": platform["classes"], "splits": platform["splits"], "input_size": platform["input_size"],
        "trained_artifact": platform["artifact"],
        "backend": predictor.backend_name, "chosen": record["chosen"], "why": record["why"],
        "candidates": record["candidates"], "reference_accuracy": record["reference_accuracy"],
        "server_backend": served.get("backend"), "server_runtime": served.get("runtime"),
        "threads": args.threads, "batch_threads": args.batch_threads, "workers": args.workers, "rounds": args.rounds,
        "raw_predictor_ms_p50": med["raw"], "naive_reference_ms_p50": med["naive"],
        "raw_speedup_vs_naive": med["naive"] / med["raw"],
        "predict_seq_ms_p50": med["seq"], "predict_seq_ms_p95": percentile(samples["seq"], 95),
        "predict_server_ms_p50": med["seq_server"], "predict_p50_over_raw": med["seq"] / med["raw"],
        "predict_p50_over_naive": med["seq"] / med["naive"],
        "seq_req_per_s": statistics.median(seq_rates),
        "c4_ms_p50": med["c4"], "c4_ms_p95": percentile(samples["c4"], 95), "c4_req_per_s": statistics.median(c4_rates),
        "c4_over_single_client": statistics.median(c4_rates) / statistics.median(seq_rates),
        "batch10_ms_p50": med["batch"], "batch_per_image_ms": med["batch"] / 10,
        "batch_per_image_gain_vs_single": med["seq"] / (med["batch"] / 10),
        "cache_hit_ms_p50": med["hit"], "cache_hit_ms_p95": percentile(samples["hit"], 95),
        "microbatch": {"window_ms": args.microbatch_window_ms, "seq_ms_p50": med["mb_seq"],
                       "seq_ms_p95": percentile(samples["mb_seq"], 95), "c4_ms_p50": med["mb_c4"],
                       "c4_ms_p95": percentile(samples["mb_c4"], 95), "c4_req_per_s": statistics.median(mb_c4_rates),
                       "seq_req_per_s": statistics.median(mb_seq_rates)},
        "manage_check_ms_p50": med.get("check"), "manage_check_baseline_ms_p50": med.get("check_baseline"),
        "raw_predictor_cpu_ms_p50": med["raw_cpu"], "naive_reference_cpu_ms_p50": med["naive_cpu"],
        "raw_cpu_speedup_vs_naive": med["naive_cpu"] / med["raw_cpu"],
        "server_cpu_ms_per_image": {k: (v[0] / v[1] if v[1] else None) for k, v in server_cpu.items()},
        "errors": len(errors), "requests": sum(len(samples[k]) for k in ("seq", "c4", "hit", "mb_seq", "mb_c4"))
        + 10 * len(samples["batch"]),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "seconds": round(time.monotonic() - began, 1), "prepare_seconds": platform["prepare_seconds"],
    }
    mb = result["microbatch"]
    check_ratio = (result["manage_check_ms_p50"] / result["manage_check_baseline_ms_p50"]
                   if result["manage_check_baseline_ms_p50"] else None)
    result["manage_check_over_baseline"] = check_ratio
    goals = [
        ("raw predictor >= 4x the naive reference", result["raw_speedup_vs_naive"] >= 4),
        ("/predict p50 <= 0.35x the naive reference", result["predict_p50_over_naive"] <= 0.35),
        ("cache hit < 5 ms", result["cache_hit_ms_p50"] < 5),
        ("/predict_batch >= 1.5x per-image throughput of single requests", result["batch_per_image_gain_vs_single"] >= 1.5),
        ("4 clients: no errors, >= 1.6x single-client throughput", not errors and result["c4_over_single_client"] >= 1.6),
        ("the server loaded the recorded runtime without timing", (served.get("runtime") or {}).get("source") == "recorded"
         and served.get("backend") == record["chosen"]),
    ]
    if check_ratio is not None:
        goals.append(("manage.py check <= 0.5x the baseline tree's", check_ratio <= 0.5))
    print(f"\nbench/api.py — {result['cpu']}; {platform['classes']} classes from {platform['data']} at "
          f"{platform['input_size']} px ({platform['artifact'] or 'random features, fitted head'}) "
          f"({platform['splits']}); runtime {result['backend']} (server: {result['server_backend']}, "
          f"{(served.get('runtime') or {}).get('source')}), {args.threads} thread(s)/model ({args.batch_threads} for "
          f"batches), gunicorn {args.workers} worker(s) × 4 threads, {args.rounds} rounds")
    print(f"  raw predictor (512×512 JPEG → top-k)  p50 {med['raw']:7.2f} ms")
    print(f"  naive eager + torchvision              p50 {med['naive']:7.2f} ms   → {result['raw_speedup_vs_naive']:.2f}x")
    print(f"  /predict sequential                    p50 {med['seq']:7.2f} ms  p95 {result['predict_seq_ms_p95']:.2f} ms"
          f"  (server {med['seq_server']:.2f} ms; {result['predict_p50_over_naive']:.2f}x naive; "
          f"{result['seq_req_per_s']:.1f} req/s)")
    print(f"  /predict 4 concurrent clients          p50 {med['c4']:7.2f} ms  p95 {result['c4_ms_p95']:.2f} ms"
          f"  ({result['c4_req_per_s']:.1f} req/s, {result['c4_over_single_client']:.2f}x one client)")
    print(f"  /predict_batch (10 images)             p50 {med['batch']:7.2f} ms  = {result['batch_per_image_ms']:.2f} ms/image"
          f"  ({result['batch_per_image_gain_vs_single']:.2f}x single)")
    print(f"  cache hit                              p50 {med['hit']:7.2f} ms  p95 {result['cache_hit_ms_p95']:.2f} ms")
    print(f"  micro-batching on (window {mb['window_ms']} ms): 4 clients p50 {mb['c4_ms_p50']:.2f} ms  p95 "
          f"{mb['c4_ms_p95']:.2f} ms ({mb['c4_req_per_s']:.1f} req/s); sequential p50 {mb['seq_ms_p50']:.2f} ms "
          f"p95 {mb['seq_ms_p95']:.2f} ms ({mb['seq_req_per_s']:.1f} req/s) — off: {med['c4']:.2f} / "
          f"{result['c4_ms_p95']:.2f} ms, {med['seq']:.2f} / {result['predict_seq_ms_p95']:.2f} ms")
    if result["manage_check_ms_p50"]:
        print(f"  manage.py check                        p50 {result['manage_check_ms_p50']:7.0f} ms"
              + (f"  (baseline tree {result['manage_check_baseline_ms_p50']:.0f} ms → {check_ratio:.2f}x)"
                 if check_ratio else ""))
    cpu = result["server_cpu_ms_per_image"]
    print(f"  CPU time (robust to other load): raw {med['raw_cpu']:.2f} ms vs naive {med['naive_cpu']:.2f} ms "
          f"→ {result['raw_cpu_speedup_vs_naive']:.2f}x; server per image: single {cpu['seq']:.2f}, "
          f"4 clients {cpu['c4']:.2f}, batch {cpu['batch']:.2f}, cache hit {cpu['hit']:.2f} ms")
    print(f"  errors {len(errors)} of {result['requests']} requests; load average before {load_before}, "
          f"after {result['load_average_after']} (other processes share these cores)")
    for text, ok in goals:
        print(f"  [{'met ' if ok else 'MISS'}] {text}")
    if errors:
        print("  first errors:", errors[:3])
    if args.json:
        args.json.write_text(json.dumps({**result, "goals": dict(goals)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
