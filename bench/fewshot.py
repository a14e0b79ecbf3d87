"""Recognition bench: calibration, open set, gallery characters (few shots, no retraining), suspect labels, and the
full retrain the gallery saves, all through the platform's own path.

    .venv/bin/python bench/fewshot.py --data DIR [--image-size 64] [--epochs 30] [--novel 0.2] [--shots 1,5,10]
                                      [--noise 0.05] [--seed 0] [--deadline 10800] [--json out.json] [--keep]

``--data`` holds ``<series>_<character>/`` class folders (a ``metadata.csv`` beside them is skipped). A seeded
``--novel`` share of the classes is held out: the *novel* classes. Their images are split per class into a shot
pool and test images; where file names carry a source group (``0001-back-f003.png``: the ``back`` animation) the
test images come from groups no shot comes from, so a shot is never a near-copy of what it is tested on.

In a throwaway ``KYARA_DATA_DIR`` (SQLite, 127.0.0.1 only, ``KYARA_MIN_IMAGE_SIDE=16``), each step as a user runs it:

1. ``import_images`` of the base classes with ``--noise`` of their images filed under another base class (labels
   flipped on purpose, recorded by sha256), ``freeze_dataset``, ``train --image-size S --epochs N`` with no other
   option (the defaults decide), ``set_alias default``; ``evaluate`` on test (ECE before and after calibration,
   the suspect-label list, scored against the flipped labels at the list's top N = the number flipped).
2. A gunicorn server and a ``qcluster`` worker start. Through the HTTP API (``/api/v1/predict_batch``): the base
   test images and every novel image, before any shot: open-set AUROC (known vs never-seen characters) and the
   share answered ``unknown`` of each.
3. For k in ``--shots`` (cumulative): ``import_images`` of k approved images per novel class; the seconds until
   ``/predict`` answers from them (the worker embeds them and rebuilds the gallery, the server reloads it: the
   answer's ``gallery_generation`` moves and ``gallery_characters`` counts every novel class); then novel-class
   top-1 among all classes on the novel test images, and base-class top-1.
4. A full retrain that includes the novel classes (every novel image but the test ones): ``freeze_dataset``,
   ``train``; its top-1 on the same novel test images through the API, and its wall time.

Prints one table (goals beside the figures). Bounded: every subprocess and wait stops at ``--deadline``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accuracy import Deadline, DeadlineExceeded, _checked, manage, platform_env  # noqa: I001 - bench/ siblings
from api import Client, free_port

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
GROUP = re.compile(r"^\d+-([a-z-]+?)(?:-f\d+)?\.[a-z]+$")  # build_pokemon.py's names: 0001-back-shiny-f003.png
BATCH = 10  # files per /predict_batch request (KYARA_PREDICT_BATCH_MAX)


def group_of(path: Path) -> str:
    match = GROUP.match(path.name)
    return match.group(1) if match else path.name


def class_folders(data: Path) -> list[Path]:
    return sorted(p for p in data.iterdir() if p.is_dir() and "_" in p.name)


def images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_novel(images: list[Path], shots: int, rng: random.Random) -> tuple[list[Path], list[Path]]:
    """(shot pool of ``shots`` images, test images from groups no shot comes from; all others when none is left)."""
    pool = rng.sample(images, min(shots, len(images) - 1))
    used = {group_of(p) for p in pool}
    test = [p for p in images if p not in pool and group_of(p) not in used]
    return pool, test or [p for p in images if p not in pool]


def link(source: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    if not target.exists():
        target.symlink_to(source.resolve())


# --- Talking to the server --------------------------------------------------------------------------

class Api:
    def __init__(self, port: int, deadline: Deadline) -> None:
        self.client = Client(port)
        self.deadline = deadline

    def answers(self, paths: list[Path], model: str | None = None) -> list[dict]:
        out = []
        query = f"?model={model}&top_k=1" if model else "?top_k=1"
        for start in range(0, len(paths), BATCH):
            self.deadline.check("predict_batch")
            chunk = [p.read_bytes() for p in paths[start:start + BATCH]]
            _, status, body = self.client.post_files(f"/api/v1/predict_batch{query}", "files", chunk)
            if status != 200:
                raise SystemExit(f"/predict_batch answered {status}: {body}")
            out += body["results"]
        return out

    def one(self, path: Path) -> dict:
        _, status, body = self.client.post_files("/api/v1/predict?top_k=1", "file", [path.read_bytes()])
        if status != 200:
            raise SystemExit(f"/predict answered {status}: {body}")
        return body


def start(args_list: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args_list, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(api: Api, server: subprocess.Popen, deadline: Deadline) -> None:
    while True:
        deadline.check("server start")
        if server.poll() is not None:
            raise SystemExit("the server exited; see its log")
        try:
            status, _ = api.client.request("GET", "/api/v1/health")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)


# --- Numbers ------------------------------------------------------------------------------------------

def auroc(positive: list[float], negative: list[float]) -> float | None:
    sys.path.insert(0, str(ROOT))
    from apps.ml.metrics import auroc as area

    return area(positive, negative)


def score(answer: dict) -> float:
    """The chance the image is one of the answers: top-1 probability times one minus the stranger probability."""
    top = answer["predictions"][0]["probability"] if answer.get("predictions") else 0.0
    return top * (1 - answer.get("stranger", 0.0))


def top1(answers: list[dict], truth: list[str]) -> float:
    """Right answers: the top prediction's slug (``unknown`` counts as wrong)."""
    hits = [bool(a.get("predictions")) and a["predictions"][0]["slug"] == t and not a["unknown"]
            for a, t in zip(answers, truth, strict=True)]
    return sum(hits) / len(hits) if hits else 0.0


def top1_ranked(answers: list[dict], truth: list[str]) -> float:
    """The top prediction's slug alone (the ranking, whatever the unknown rule says)."""
    hits = [bool(a.get("predictions")) and a["predictions"][0]["slug"] == t for a, t in zip(answers, truth, strict=True)]
    return sum(hits) / len(hits) if hits else 0.0


def pct(value) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


# --- The run ------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--novel", type=float, default=0.2)
    parser.add_argument("--shots", default="1,5,10")
    parser.add_argument("--noise", type=float, default=0.05, help="share of base images filed under a wrong class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=10800)
    parser.add_argument("--skip-retrain", action="store_true", help="leave out step 4 (the full retrain)")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE passed to train (both trainings)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the throwaway folder (its path is printed)")
    args = parser.parse_args()
    deadline = Deadline(args.deadline)
    shots = sorted({int(k) for k in args.shots.split(",")})
    work = Path(tempfile.mkdtemp(prefix="kyara-fewshot-"))
    print(f"work folder: {work}", flush=True)
    processes: list[subprocess.Popen] = []
    try:
        report = run(args, shots, work, deadline, processes)
    except DeadlineExceeded as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 2
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    return 0


def run(args, shots: list[int], work: Path, deadline: Deadline, processes: list) -> dict:
    rng = random.Random(args.seed)
    folders = class_folders(args.data)
    novel = sorted(rng.sample(folders, max(1, round(args.novel * len(folders)))), key=lambda p: p.name)
    base = [f for f in folders if f not in novel]
    # Base classes, with a share of their images filed under the next base class (labels flipped on purpose).
    base_dir, flipped = work / "base", set()
    for i, folder in enumerate(base):
        for path in images_of(folder):
            wrong = rng.random() < args.noise
            link(path, base_dir / (base[(i + 1) % len(base)] if wrong else folder).name)
            if wrong:
                flipped.add(sha(path))
    pools, novel_test = {}, {}
    for folder in novel:
        pools[folder.name], novel_test[folder.name] = split_novel(images_of(folder), max(shots), rng)

    data_dir = work / "kyara"
    data_dir.mkdir()
    env = {**platform_env(data_dir), "KYARA_THROTTLE_PREDICT_ANON": "100000/min", "KYARA_THROTTLE_ANON": "100000/min",
           "KYARA_GALLERY_POLL_SECONDS": "1"}
    log = work / "commands.log"

    def step(argv: list[str]) -> dict:
        print(f"  manage.py {' '.join(argv)}", flush=True)
        result = manage(argv, env=env, deadline=deadline, log=log)
        return _checked(result, argv[0], log) if "--json" in argv else result

    step(["migrate", "--verbosity", "0"])
    step(["import_images", str(base_dir), "--json"])
    step(["freeze_dataset", "--name", "base", "--json"])
    sets = [item for value in args.set for item in ("--set", value)]
    started = time.perf_counter()
    job = step(["train", "--dataset-version", "base", "--image-size", str(args.image_size), "--epochs",
                str(args.epochs), "--sync", "--json", *sets])
    base_train_seconds = time.perf_counter() - started
    model = job.get("model_version") or job.get("model_version_name")
    step(["set_alias", "default", str(model), "--why", "fewshot bench"])
    evaluation = step(["evaluate", "--model", str(model), "--dataset-version", "base", "--split", "test", "--json"])
    export = work / "export"
    step(["export_dataset", "base", str(export), "--json"])

    # Suspect labels against the flipped ones.
    issues = evaluation.get("label_issues") or []
    shas = image_shas(env, [row["image"] for row in issues])
    listed = [shas.get(row["image"]) for row in issues]
    top_n = listed[:len(flipped)]
    suspects = {"flipped": len(flipped), "listed": len(issues),
                "precision_at_n": sum(s in flipped for s in top_n) / len(top_n) if top_n else None,
                "recall_at_n": sum(s in flipped for s in top_n) / len(flipped) if flipped else None,
                "precision_all": sum(s in flipped for s in listed) / len(listed) if listed else None,
                "recall_all": sum(s in flipped for s in listed) / len(flipped) if flipped else None,
                "withheld": [note for note in evaluation.get("notes", []) if "not listed" in note]}

    # Server and worker.
    port = free_port()
    processes.append(start([str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "--bind",
                            f"127.0.0.1:{port}", "--workers", "1", "--threads", "4", "--timeout", "300"], env,
                           work / "gunicorn.log"))
    processes.append(start([sys.executable, "manage.py", "qcluster"], env, work / "qcluster.log"))
    api = Api(port, deadline)
    wait_ready(api, processes[0], deadline)
    time.sleep(5)  # the worker builds the promoted version's gallery (prototypes of the base classes)

    base_test = sorted(p for p in (export / "test").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    manifest = {row.split(",")[0].split("/")[-1]: row.split(",")[2]
                for row in (export / "manifest.csv").read_text().splitlines()[1:]}
    base_truth = [manifest[p.name] for p in base_test]
    all_novel = [p for folder in novel for p in images_of(folder)]
    known = api.answers(base_test)
    unseen = api.answers(all_novel)
    open_set = {"auroc": auroc([score(a) for a in known], [score(a) for a in unseen]),
                "unknown_rate_unseen": sum(a["unknown"] for a in unseen) / len(unseen),
                "unknown_rate_known": sum(a["unknown"] for a in known) / len(known),
                "base_top1": top1(known, base_truth), "base_top1_ranked": top1_ranked(known, base_truth)}

    # Gallery characters, k shots each, cumulative.
    test_paths = [p for name in novel_test for p in novel_test[name]]
    generation = api.one(base_test[0])["model"]["gallery_generation"]
    novel_slugs: dict[str, str] = {}
    gallery = []
    done = 0
    for k in shots:
        batch = work / f"shots-{k}"
        for name, pool in pools.items():
            for path in pool[done:k]:
                link(path, batch / name)
        began = time.monotonic()
        step(["import_images", str(batch), "--json"])
        novel_slugs = novel_slugs or slugs_of(env, [f.name for f in novel])
        probe = next(iter(pools.values()))[0]
        waited = None
        while waited is None and time.monotonic() - began < 300:
            deadline.check("gallery")
            model = api.one(probe)["model"]
            if model["gallery_generation"] > generation and model["gallery_characters"] == len(novel):
                waited, generation = time.monotonic() - began, model["gallery_generation"]
            else:
                time.sleep(0.5)
        truth = [novel_slugs[p.parent.name] for p in test_paths]
        novel_answers = api.answers(test_paths)
        base_answers = api.answers(base_test)
        gallery.append({"shots": k, "seconds_to_recognised": waited, "novel_top1": top1_ranked(novel_answers, truth),
                        "novel_top1_not_unknown": top1(novel_answers, truth),
                        "novel_from_gallery": sum(a["predictions"][0]["source"] == "gallery" for a in novel_answers)
                        / len(novel_answers),
                        "base_top1": top1(base_answers, base_truth),
                        "base_top1_ranked": top1_ranked(base_answers, base_truth), "test_images": len(test_paths)})
        done = k
        print(f"  {k} shot(s): {gallery[-1]}", flush=True)

    retrain = None
    if not args.skip_retrain:
        full = work / "full"
        for name, pool in pools.items():
            for path in images_of(args.data / name):
                if path not in novel_test[name] and path not in pool:
                    link(path, full / name)
        if full.exists():
            step(["import_images", str(full), "--json"])
        step(["freeze_dataset", "--name", "full", "--json"])
        started = time.perf_counter()
        second = step(["train", "--dataset-version", "full", "--image-size", str(args.image_size), "--epochs",
                       str(args.epochs), "--sync", "--json", *sets])
        seconds = time.perf_counter() - started
        other = second.get("model_version") or second.get("model_version_name")
        truth = [novel_slugs[p.parent.name] for p in test_paths]
        answers = api_as_version(api, test_paths, str(other), env)
        retrain = {"model": other, "seconds": seconds, "novel_top1": top1_ranked(answers, truth)}

    return {"data": str(args.data), "classes": len(folders), "novel_classes": len(novel),
            "base_images": sum(len(images_of(f)) for f in base), "image_size": args.image_size, "epochs": args.epochs,
            "base_train_seconds": base_train_seconds, "model": model,
            "ece_before": evaluation.get("ece_uncalibrated"), "ece_after": evaluation.get("ece"),
            "temperature": (evaluation.get("calibration") or {}).get("temperature"),
            "evaluate_top1": evaluation.get("top1"), "open_set": open_set, "suspects": suspects, "gallery": gallery,
            "retrain": retrain}


def api_as_version(api: Api, paths: list[Path], version: str, env: dict) -> list[dict]:
    """Answers of a model version that no alias points at: anonymous clients may name aliases only, so the bench
    points a ``retrained`` alias at it (``set_alias``, recorded like any other move)."""
    manage(["set_alias", "retrained", version, "--force", "--why", "fewshot bench: the full retrain"], env=env,
           deadline=api.deadline, log=Path(env["KYARA_DATA_DIR"]).parent / "commands.log")
    return api.answers(paths, model="retrained")


def image_shas(env: dict, ids: list[int]) -> dict[int, str]:
    found = json.loads(shell(env, "from apps.characters.models import Image; import json; print(json.dumps(dict("
                                  f"Image.objects.filter(pk__in={ids!r}).values_list('pk', 'sha256'))))"))
    return {int(pk): value for pk, value in found.items()}  # JSON keys are strings


def slugs_of(env: dict, folders: list[str]) -> dict[str, str]:
    """The character slug each class folder became (import_images names them by ``split_folder_names``)."""
    code = ("from apps.characters.models import Character, Series; "
            "from apps.characters.services import split_folder_names; import json\n"
            f"names = split_folder_names({folders!r}, set(Series.objects.values_list('slug', flat=True)))\n"
            "print(json.dumps({folder: Character.objects.get(series__slug=series, name=name).slug "
            "for folder, (series, name) in names.items()}))")
    return json.loads(shell(env, code))


def shell(env: dict, code: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    return result.stdout.strip().splitlines()[-1]


def print_table(report: dict) -> None:
    o, s = report["open_set"], report["suspects"]
    print(f"\nRecognition bench: {report['data']} ({report['classes']} classes, {report['novel_classes']} held out as "
          f"novel), {report['image_size']} px, {report['epochs']} epochs; base training {report['base_train_seconds']:.0f} s")
    print(f"{'measure':58} {'value':>12}  goal")
    rows = [
        ("test ECE before calibration (evaluate)", f"{report['ece_before']:.3f}" if report["ece_before"] is not None
         else "—", ""),
        (f"test ECE after (T = {report['temperature'] or 1:.3f})", f"{report['ece_after']:.3f}"
         if report["ece_after"] is not None else "—", "≤ 0.03"),
        ("open-set AUROC, base test vs never-seen characters (HTTP)", f"{o['auroc']:.3f}" if o["auroc"] else "—", "≥ 0.90"),
        ("unknown rate: never-seen characters", pct(o["unknown_rate_unseen"]), ""),
        ("unknown rate: base test images", pct(o["unknown_rate_known"]), ""),
        ("base top-1 before any gallery character (HTTP)", pct(o["base_top1"]), ""),
        (f"suspect labels: precision at N = {s['flipped']} flipped", pct(s["precision_at_n"]), "≥ 70%"),
        (f"suspect labels: recall at N (list holds {s['listed']})", pct(s["recall_at_n"]), "≥ 70%"),
    ]
    for g in report["gallery"]:
        rows += [
            (f"{g['shots']} shot(s): seconds until /predict names them", f"{g['seconds_to_recognised']:.1f}"
             if g["seconds_to_recognised"] is not None else "not in 300 s", "≤ 60"),
            (f"{g['shots']} shot(s): novel top-1 among all classes ({g['test_images']} images)", pct(g["novel_top1"]),
             "≥ 60% (5)"),
            (f"{g['shots']} shot(s): base top-1 (drop vs before)", f"{pct(g['base_top1'])} "
             f"({(g['base_top1'] - o['base_top1']) * 100:+.1f} pt)", "≥ −1 pt"),
        ]
    if report["retrain"]:
        r = report["retrain"]
        rows += [("full retrain with the novel classes: novel top-1", pct(r["novel_top1"]), ""),
                 ("full retrain: wall seconds", f"{r['seconds']:.0f}", "")]
        five = next((g for g in report["gallery"] if g["shots"] == 5), None)
        if five and r["novel_top1"]:
            rows.append(("5-shot gallery / full retrain (novel top-1)", pct(five["novel_top1"] / r["novel_top1"]),
                         "≥ 80%"))
    for name, value, goal in rows:
        print(f"{name:58} {value:>12}  {goal}")
    if s["withheld"]:
        print(f"note: {s['withheld'][0]}")


if __name__ == "__main__":
    sys.exit(main())
