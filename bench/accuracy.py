"""Accuracy of the whole platform path, as a user runs it, next to a plain torchvision reference loop.

    .venv/bin/python bench/accuracy.py --data DIR [--image-size 64] [--epochs 30] [--set KEY=VALUE ...]
                                       [--seed 0] [--threads N] [--ref-workers 2] [--skip-reference]
                                       [--reference-cache FILE] [--deadline 7200] [--json out.json]

``--data`` is a folder of ``<series>_<character>/`` class folders (other files beside them, such as a
``metadata.csv``, are skipped by the import). In a throwaway ``KYARA_DATA_DIR`` (SQLite, 127.0.0.1 only,
no internet, ``KYARA_MIN_IMAGE_SIDE=16`` so that small sprites are accepted) it runs, each as
``.venv/bin/python manage.py ...`` in its own process:

1. ``import_images DIR``, 2. ``freeze_dataset --name bench`` (default splits),
3. ``train --dataset-version bench --image-size S --epochs N --sync --json`` with no other option, so
   the platform's defaults decide (plus each ``--set KEY=VALUE`` given here, to try a recipe change),
4. ``evaluate --model <the job's model version> --dataset-version bench --split test --json`` (the
   serving path), 5. ``export_dataset bench OUT`` (``train/ val/ test/`` ImageFolder trees).

Then the reference, written the way a script writer would: ``ImageFolder`` with PIL's
``.convert("RGB")``, RandomResizedCrop(S, scale=(0.6, 1)), RandomHorizontalFlip, RandomRotation(15),
ToTensor, ImageNet Normalize; eval Resize(round(S*256/224)) + CenterCrop(S); torchvision
``mobilenet_v2(weights=None)``, AdamW 1e-3, CosineAnnealingLR over the epochs, batch 32, the epoch
with the best validation accuracy kept. Two runs, both tested on the platform's exported test split:

- reference (train+val): every image the platform was given except its test split (exported train +
  val), with its own seeded random 10% held out for validation;
- reference (train only): the platform's train split alone (10% of it held out), so that the engine
  and the use of the data can be told apart.

The test split is never used to choose anything. Classes are matched by folder name. The table gives
top-1, mean per-class accuracy, training wall seconds and training images/s for each, and the
train-vs-serve agreement: the training job's own test accuracy against ``evaluate``'s top-1.
``--reference-cache FILE`` reuses reference results keyed by data folder, size, epochs, seed, the
platform's test split content and the reference's training images, so repeated platform experiments
do not retrain the reference. Bounded: every subprocess and the reference loop stop at ``--deadline``
seconds (default 7200) from the start.
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASET = "bench"
# Bump when the reference loop changes, so cached results from the old loop are not reused.
REFERENCE_RECIPE = "mobilenet_v2/adamw1e-3/cosine/b32/rrc0.6-flip-rot15/val10%/v1"


class DeadlineExceeded(RuntimeError):
    pass


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise DeadlineExceeded(f"deadline of {self.seconds:.0f}s reached during {what}")


# --- The platform, through its management commands ------------------------------------------------

def platform_env(data_dir: Path) -> dict:
    return dict(os.environ, KYARA_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings.local",
                DJANGO_DEBUG="0", KYARA_LOG_LEVEL="WARNING", KYARA_MIN_IMAGE_SIDE="16", PYTHONUNBUFFERED="1")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (train --sync starts train_job in a session of its own)."""
    found, stack = [], [pid]
    while stack:
        children = Path(f"/proc/{stack.pop()}/task")
        for task in children.glob("*/children") if children.is_dir() else ():
            try:
                kids = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            found += kids
            stack += kids
    return found


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the command and everything it started, then kill what is left after 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [*_descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def manage(args: list[str], *, env: dict, deadline: Deadline, log: Path) -> dict:
    """Run ``manage.py ARGS``; return its exit code, wall seconds and, with --json, the JSON it printed."""
    command = [sys.executable, str(ROOT / "manage.py"), *args]
    timeout = deadline.left()
    if timeout <= 0:
        raise DeadlineExceeded(f"deadline reached before manage.py {args[0]}")
    started = time.perf_counter()
    with open(log, "ab") as err:
        err.write(f"\n$ {' '.join(command)}\n".encode())
        err.flush()
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise DeadlineExceeded(f"deadline reached during manage.py {args[0]} (stopped)") from None
        except BaseException:
            _stop(proc)
            raise
    text = out.decode("utf-8", "replace")
    parsed = None
    for line in reversed(text.splitlines()):  # the --json object is the last line that is one
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    return {"returncode": proc.returncode, "seconds": time.perf_counter() - started, "json": parsed,
            "stdout": text}


def _checked(result: dict, what: str, log: Path) -> dict:
    if result["returncode"] != 0 or result["json"] is None:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{what} failed (exit {result['returncode']}):\n{result['stdout'][-1500:]}\n{tail}")
    return result["json"]


def _first(data: dict, *keys, default=None):
    """The first key present and not None, looking one level into nested dicts as well (``summary``)."""
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    for value in data.values():
        if isinstance(value, dict):
            found = _first(value, *keys)
            if found is not None:
                return found
    return default


def _harmonic_images_per_second(rows: list[dict]) -> float | None:
    rates = [float(r["images_per_second"]) for r in rows if r.get("images_per_second") and float(r["images_per_second"]) > 0]
    return len(rates) / sum(1 / r for r in rates) if rates else None


def run_platform(args, data_dir: Path, export_dir: Path, deadline: Deadline) -> dict:
    data_dir.mkdir(parents=True, exist_ok=True)
    env, log = platform_env(data_dir), data_dir.parent / "commands.log"
    steps = {}

    def step(name, argv):
        print(f"  manage.py {' '.join(argv)}", flush=True)
        result = manage(argv, env=env, deadline=deadline, log=log)
        steps[name] = {"seconds": round(result["seconds"], 1), "returncode": result["returncode"]}
        return result

    migrated = step("migrate", ["migrate", "--verbosity", "0"])
    if migrated["returncode"]:
        raise SystemExit(f"migrate failed:\n{log.read_text()[-3000:]}")
    imported = _checked(step("import_images", ["import_images", str(args.data), "--json"]), "import_images", log)
    frozen = _checked(step("freeze_dataset", ["freeze_dataset", "--name", DATASET, "--json"]), "freeze_dataset", log)
    train_argv = ["train", "--dataset-version", DATASET, "--image-size", str(args.image_size),
                  "--epochs", str(args.epochs), "--sync", "--json"]
    for item in args.set:
        train_argv += ["--set", item]
    trained = step("train", train_argv)
    job = _checked(trained, "train", log)  # a failed job still prints its JSON; the exit code says it failed
    if trained["returncode"] != 0:
        raise SystemExit(f"training job {job.get('id')} {job.get('status')}: {job.get('error') or job.get('stop_reason')}")
    model = job.get("model_version") or job.get("model_version_name")
    evaluation = _checked(step("evaluate", ["evaluate", "--model", str(model), "--dataset-version", DATASET,
                                            "--split", "test", "--json"]), "evaluate", log)
    exported = _checked(step("export_dataset", ["export_dataset", DATASET, str(export_dir), "--json"]),
                        "export_dataset", log)

    # The job's run folder (job-<id> or job-<id>-<suffix>) holds metrics.csv: per-epoch training images/s.
    runs = data_dir / "artifacts" / "training"
    found = sorted([*runs.glob(f"job-{job.get('id')}/metrics.csv"), *runs.glob(f"job-{job.get('id')}-*/metrics.csv")])
    epochs = []
    if found:
        with open(found[0], newline="", encoding="utf-8") as handle:
            epochs = list(csv.DictReader(handle))
    train_seconds = _first(job, "duration_seconds") or trained["seconds"]
    return {
        "steps": steps, "import": imported, "freeze": frozen, "export": exported,
        "job": job, "evaluation": evaluation, "epochs": epochs,
        "model_version": model,
        "top1": _first(evaluation, "top1"),
        "mean_per_class_accuracy": _first(evaluation, "mean_per_class_accuracy"),
        "evaluated_images": _first(evaluation, "images"),
        "train_seconds": float(train_seconds),
        "train_command_seconds": trained["seconds"],
        "images_per_second": _harmonic_images_per_second(epochs),
        "job_test_accuracy": _first(job, "test_accuracy"),
        "best_epoch": _first(job, "best_epoch"),
        "best_val_accuracy": _first(job, "best_val_accuracy"),
        "leak_warning": evaluation.get("leak_warning"),
    }


# --- The reference: a plain torchvision script ----------------------------------------------------

def split_hash(manifest: Path, splits: tuple[str, ...]) -> str:
    """sha256 over the sorted (split, character, image sha256) rows of the given splits of an export."""
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = sorted(f"{r['split']}\t{r['character']}\t{r['sha256']}" for r in csv.DictReader(handle)
                      if r["split"] in splits)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def reference_run(export_dir: Path, splits: tuple[str, ...], *, size: int, epochs: int, seed: int, workers: int,
                  deadline: Deadline) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import ConcatDataset, DataLoader, Subset
    from torchvision import datasets, models
    from torchvision import transforms as T

    classes = sorted({d.name for split in ("train", "val", "test") if (export_dir / split).is_dir()
                      for d in (export_dir / split).iterdir() if d.is_dir()})

    class Folder(datasets.ImageFolder):
        """ImageFolder whose class indices come from one list of folder names, whichever folders exist here."""

        def find_classes(self, directory):
            return classes, {name: i for i, name in enumerate(classes)}

    normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(), T.RandomRotation(15),
                          T.ToTensor(), normalize])
    eval_tf = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), normalize])

    started = time.perf_counter()
    pool_train = ConcatDataset([Folder(str(export_dir / s), transform=train_tf, allow_empty=True) for s in splits])
    pool_eval = ConcatDataset([Folder(str(export_dir / s), transform=eval_tf, allow_empty=True) for s in splits])
    order = torch.randperm(len(pool_train), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(0.1 * len(order)))
    train_set, val_set = Subset(pool_train, order[n_val:]), Subset(pool_eval, order[:n_val])
    test_set = Folder(str(export_dir / "test"), transform=eval_tf, allow_empty=True)
    loader = dict(batch_size=32, num_workers=workers, persistent_workers=workers > 0)
    train_loader = DataLoader(train_set, shuffle=True, generator=torch.Generator().manual_seed(seed), **loader)
    val_loader = DataLoader(val_set, **loader)

    torch.manual_seed(seed)
    model = models.mobilenet_v2(weights=None, num_classes=len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    criterion = nn.CrossEntropyLoss()

    def predict(loader_):
        model.eval()
        ys, ps = [], []
        with torch.inference_mode():
            for x, y in loader_:
                ps.append(model(x).argmax(1))
                ys.append(y)
        return torch.cat(ys), torch.cat(ps)

    best_acc, best_epoch, best_state, history = -1.0, 0, None, []
    train_images = train_seconds = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        epoch_start, seen = time.perf_counter(), 0
        for x, y in train_loader:
            deadline.check(f"reference epoch {epoch}")
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
        seconds = time.perf_counter() - epoch_start
        train_images, train_seconds = train_images + seen, train_seconds + seconds
        scheduler.step()
        y, p = predict(val_loader)
        val_acc = (y == p).float().mean().item()
        history.append({"epoch": epoch, "val_accuracy": val_acc, "seconds": seconds, "images_per_second": seen / seconds})
        if val_acc > best_acc:
            best_acc, best_epoch, best_state = val_acc, epoch, copy.deepcopy(model.state_dict())
    wall = time.perf_counter() - started

    model.load_state_dict(best_state)
    y, p = predict(DataLoader(test_set, **loader))
    per_class = [(p[y == c] == c).float().mean().item() for c in range(len(classes)) if (y == c).any()]
    return {
        "top1": (y == p).float().mean().item(), "mean_per_class_accuracy": sum(per_class) / len(per_class),
        "train_seconds": wall, "images_per_second": train_images / train_seconds if train_seconds else None,
        "best_epoch": best_epoch, "best_val_accuracy": best_acc, "trained_on": list(splits),
        "train_images": len(train_set), "val_images": len(val_set), "test_images": len(test_set),
        "classes": len(classes), "threads": torch.get_num_threads(), "workers": workers, "history": history,
    }


def cached_reference(args, export_dir: Path, name: str, splits: tuple[str, ...], deadline: Deadline) -> dict:
    manifest = export_dir / "manifest.csv"
    key_fields = {"data": str(args.data.resolve()), "image_size": args.image_size, "epochs": args.epochs,
                  "seed": args.seed, "test_split": split_hash(manifest, ("test",)),
                  "trained_on": split_hash(manifest, splits), "recipe": REFERENCE_RECIPE}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
    cache = {}
    if args.reference_cache and args.reference_cache.is_file():
        cache = json.loads(args.reference_cache.read_text(encoding="utf-8"))
        if key in cache:
            print(f"  {name}: from the cache {args.reference_cache}", flush=True)
            return {**cache[key]["result"], "cached": True}
    print(f"  {name}: training on {'+'.join(splits)} ...", flush=True)
    result = reference_run(export_dir, splits, size=args.image_size, epochs=args.epochs, seed=args.seed,
                           workers=args.ref_workers, deadline=deadline)
    if args.reference_cache:
        cache[key] = {"key": key_fields, "name": name, "result": result}
        args.reference_cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.reference_cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        tmp.replace(args.reference_cache)
    return {**result, "cached": False}


# --- The report ----------------------------------------------------------------------------------

def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of <series>_<character>/ class folders")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to manage.py train as --set KEY=VALUE (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="the reference's seed (held-out split, init, order)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the reference")
    parser.add_argument("--ref-workers", type=int, default=2, help="DataLoader workers of the reference")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--reference-cache", type=Path, help="JSON file of reference results to reuse and extend")
    parser.add_argument("--deadline", type=float, default=7200.0, help="seconds for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway data folder (and its commands.log)")
    parser.add_argument("--json", type=Path, help="also write everything here")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")
    deadline = Deadline(args.deadline)
    # PIL says this once per palette sprite; the reference converts them as a plain script does regardless.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")

    work = Path(tempfile.mkdtemp(prefix="kyara-bench-accuracy-"))
    print(f"bench/accuracy.py: {args.data}, {args.image_size}px, {args.epochs} epochs, set {args.set or 'nothing'}; "
          f"throwaway data in {work}", flush=True)
    report = {"data": str(args.data.resolve()), "image_size": args.image_size, "epochs": args.epochs, "set": args.set,
              "seed": args.seed, "cpus": os.cpu_count(), "work_dir": str(work)}
    try:
        return measure(args, work, report, deadline)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def measure(args, work: Path, report: dict, deadline: Deadline) -> int:
    data_dir, export_dir, load_before = work / "data", work / "export", os.getloadavg()
    try:
        platform = run_platform(args, data_dir, export_dir, deadline)
        report["platform"] = platform
        references = {}
        if not args.skip_reference:
            import torch

            torch.set_num_threads(args.threads)
            for name, splits in (("reference (train+val)", ("train", "val")), ("reference (train only)", ("train",))):
                references[name] = cached_reference(args, export_dir, name, splits, deadline)
        report["references"] = references
    except DeadlineExceeded as exc:
        report["error"] = str(exc)
        print(f"STOPPED: {exc}", file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        return 2

    job, imported, counts = platform["job"], platform["import"], platform["freeze"].get("counts", {})
    rows = [("kyara defaults" + (" + set" if args.set else ""), platform), *references.items()]
    print(f"\nbench/accuracy.py — {args.data} at {args.image_size}px, {args.epochs} epochs"
          f"{', --set ' + ' '.join(args.set) if args.set else ''}")
    refused = f"refused {imported.get('refused_total')}" + (f" {imported['refused']}" if imported.get("refused") else "")
    print(f"  import: {imported.get('new')} new, {refused}, skipped non-image files {imported.get('skipped_files')}; "
          f"frozen {platform['freeze'].get('characters')} characters, splits {counts}")
    print(f"  job {job.get('id')}: {job.get('status')}, {job.get('epochs_run')} epochs run "
          f"({job.get('stop_reason')}), best epoch {platform['best_epoch']} (val {_pct(platform['best_val_accuracy'])}), "
          f"device {job.get('device')} {job.get('precision')}, weights {job.get('weights_used', 'n/a')}, "
          f"recipe {job.get('recipe', 'n/a')}, config {json.dumps(job.get('config'), sort_keys=True)}")
    print(f"\n  {'':26} {'top-1':>7} {'mean/class':>10} {'train wall s':>12} {'train img/s':>11}  trained on")
    for name, r in rows:
        refit = _first(job, "refit_images")
        chosen = f"train, epochs chosen on val, refit on train+val: {refit}" if refit else "train (val for selection)"
        on = (chosen if r is platform else
              f"{'+'.join(r['trained_on'])}: {r['train_images']} (+{r['val_images']} own val)"
              + (" [cached]" if r.get("cached") else ""))
        print(f"  {name:26} {_pct(r['top1']):>7} {_pct(r['mean_per_class_accuracy']):>10} "
              f"{_num(r['train_seconds']):>12} {_num(r['images_per_second']):>11}  {on}")
    served, trained = platform["top1"], platform["job_test_accuracy"]
    gap = None if served is None or trained is None else (served - trained) * 100
    report["train_vs_serve"] = {"job_test_accuracy": trained, "evaluate_top1": served, "difference_points": gap,
                                "evaluated_images": platform["evaluated_images"]}
    print(f"\n  train vs serve: the job's test_accuracy {_pct(trained)}, evaluate's top-1 {_pct(served)} on "
          f"{platform['evaluated_images']} images → {'n/a' if gap is None else f'{gap:+.1f}'} points")
    if platform["leak_warning"]:
        print(f"  LEAK: {platform['leak_warning']}")
    report["load_average_before"], report["load_average_after"] = load_before, os.getloadavg()
    report["seconds"] = round(args.deadline - deadline.left(), 1)
    print(f"  {report['seconds']:.0f}s in all; load average before {load_before}, after {report['load_average_after']} "
          f"({os.cpu_count()} CPUs; wall seconds and images/s move with other load, accuracies do not)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
