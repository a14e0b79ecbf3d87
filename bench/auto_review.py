"""How many crawled images the auto-review policy approves correctly, on real images with known truth.

    .venv/bin/python bench/auto_review.py [--data /tmp/data/pokemon32] [--import-share 0.6] [--noise 0.15]
                                          [--p 0.9] [--characters N] [--epochs 20] [--image-size 64]
                                          [--seed 0] [--deadline 1800] [--keep] [--json out.json]

``--data`` is a folder of ``<series>_<character>/`` class folders. Each class's images are split by a fixed
hash of (seed, folder, file name): ``--import-share`` of them become the approved dataset, the rest are posts
on a fake safebooru.org (the Gelbooru ``index.php?page=dapi`` API Kyara's ``safebooru`` source speaks) served
by this script on 127.0.0.1. Every post is tagged with one character's tag and ``solo``; a ``--noise`` share of
each class's posts is moved under another character's tag (a booru mistag), so the truth of every crawled
image is the folder it came from and the label it arrives with may be wrong.

In a throwaway ``KYARA_DATA_DIR`` (SQLite, ``KYARA_MIN_IMAGE_SIDE=16`` for small sprites,
``KYARA_WEIGHTS_DOWNLOAD=0``: nothing leaves 127.0.0.1), the platform runs as a user runs it:

1. ``manage.py import_images``, ``freeze_dataset`` (default splits), ``train --epochs N --image-size S --sync``
   with the default recipe (the job registers its model version); then a real worker (``manage.py worker
   --queue default``, one of the two clusters ``make run`` starts) runs what registration queued (the runtime
   choice and the evaluation on test), and ``manage.py set_alias default <version>`` promotes it;
2. one crawl job per character through ``apps.crawling.services.crawl_job_create`` (source ``safebooru``, the
   character's tag, ``solo=True``, ``auto_approve_min_confidence=--p``, quota = its posts), queued to that
   worker: the crawl's ``suggest`` step hands new images to ``apps.review.tasks.suggest_images``, which stores
   the default model's verdict on each and approves what it confirms at ``>= p``;
3. once every job ended and the queue is empty: the counts against the truth, at ``--p`` from what the policy
   did (the ``auto_approve`` review batches), and for every p of ``THRESHOLDS`` recomputed from the stored
   Suggestions (``agrees`` and ``claimed_probability >= p``, the policy's own rule) without crawling again.

Bounded: at most the images of ``--data``, 32 crawl jobs by default (``--characters`` fewer), and every
subprocess and wait stops at ``--deadline`` seconds from the start.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import quoteattr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.accuracy import Deadline, DeadlineExceeded, _checked, _stop, manage, platform_env  # noqa: E402

SOURCE = "safebooru"  # a collection plan's default source (KYARA_CRAWL_PLAN_SOURCES)
DATASET = "auto-review"
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}


# --- The data: a split by fixed hash, posts with mistags ------------------------------------------------

@dataclass(frozen=True)
class Post:
    """One post of the fake site: it carries ``claimed``'s tag and shows a picture from folder ``truth``."""

    id: int
    claimed: str  # class folder whose tag the post carries
    truth: str  # class folder the picture comes from
    path: Path

    @property
    def mislabelled(self) -> bool:
        return self.claimed != self.truth


def _rank(seed: int, *parts: str) -> str:
    return hashlib.sha256("\0".join((str(seed), *parts)).encode()).hexdigest()


def class_folders(data: Path) -> dict[str, list[Path]]:
    """Each class folder's images, in name order (other files, such as metadata.csv, are not classes)."""
    folders = {}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            folders[folder.name] = files
    if len(folders) < 2:
        raise SystemExit(f"{data} needs at least two <series>_<character>/ folders of images")
    return folders


def split(folders: dict[str, list[Path]], *, import_share: float, noise: float, seed: int
          ) -> tuple[dict[str, list[Path]], list[Post]]:
    """(images to import per folder, posts): per folder, the files ordered by a fixed hash, the first
    ``import_share`` imported; of the rest, ``noise`` of them are posted under another folder's tag (chosen
    at random among the others), the others under their own. Post ids are shuffled, so a listing mixes both."""
    rng = random.Random(seed)
    imported: dict[str, list[Path]] = {}
    pairs: list[tuple[str, str, Path]] = []  # (claimed, truth, file)
    names = list(folders)
    for name, files in folders.items():
        ordered = sorted(files, key=lambda p: _rank(seed, name, p.name))
        keep = min(len(ordered) - 1, max(1, round(import_share * len(ordered))))
        imported[name], pool = ordered[:keep], ordered[keep:]
        mistagged = round(noise * len(pool))
        for index, path in enumerate(pool):
            claimed = rng.choice([other for other in names if other != name]) if index < mistagged else name
            pairs.append((claimed, name, path))
    rng.shuffle(pairs)
    top = 100_000
    return imported, [Post(top - i, claimed, truth, path) for i, (claimed, truth, path) in enumerate(pairs)]


def write_import_folder(imported: dict[str, list[Path]], target: Path) -> int:
    """The imported share as ``target/<folder>/<file>`` (hard links where the file system allows)."""
    count = 0
    for name, files in imported.items():
        (target / name).mkdir(parents=True, exist_ok=True)
        for path in files:
            try:
                os.link(path, target / name / path.name)
            except OSError:
                shutil.copyfile(path, target / name / path.name)
            count += 1
    return count


# --- The fake safebooru.org on 127.0.0.1 -----------------------------------------------------------------

class FakeSafebooru:
    """``/index.php?page=dapi&s=post&q=index&tags=...&limit=&pid=`` (XML, newest first, ``id:<N`` honoured)
    and ``/images/<id>.<ext>``, over ``posts``. ``tags`` (folder → tag) is filled once the characters exist."""

    def __init__(self, posts: list[Post]) -> None:
        self.posts = sorted(posts, key=lambda p: -p.id)
        self.by_id = {post.id: post for post in posts}
        self.tags: dict[str, str] = {}
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        self._sizes: dict[int, tuple[int, int, str]] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                status, body, kind = site.answer(parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()})
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def post_tags(self, post: Post) -> list[str]:
        return [self.tags[post.claimed], "solo", "pokemon"]

    def _meta(self, post: Post) -> tuple[int, int, str]:
        """(width, height, md5) of the post's file, as a booru lists them."""
        if post.id not in self._sizes:
            from PIL import Image as PILImage

            data = post.path.read_bytes()
            with PILImage.open(post.path) as img:
                self._sizes[post.id] = (img.width, img.height, hashlib.md5(data).hexdigest())
        return self._sizes[post.id]

    def answer(self, path: str, params: dict) -> tuple[int, bytes, str]:
        with self.lock:
            self.hits["listing" if path == "/index.php" else "image" if path.startswith("/images/") else "other"] += 1
        if path == "/index.php" and params.get("page") == "dapi":
            wanted, below = [], None
            for tag in params.get("tags", "").split():
                if tag.startswith("id:<"):
                    below = int(tag[4:])
                else:
                    wanted.append(tag)
            limit, pid = min(int(params.get("limit", 100)), 1000), int(params.get("pid", 0))
            with self.lock:
                matching = [p for p in self.posts if (below is None or p.id < below)
                            and all(tag in self.post_tags(p) for tag in wanted)]
                page = matching[pid * limit:(pid + 1) * limit]
                rows = []
                for post in page:
                    width, height, md5 = self._meta(post)
                    rows.append(f'<post id="{post.id}" md5="{md5}" rating="s" width="{width}" height="{height}" '
                                f'file_url={quoteattr(f"{self.root}/images/{post.id}{post.path.suffix.lower()}")} '
                                f'tags={quoteattr(" " + " ".join(self.post_tags(post)) + " ")}/>')
            body = (f'<?xml version="1.0" encoding="UTF-8"?><posts count="{len(matching)}" offset="{pid * limit}">'
                    f'{"".join(rows)}</posts>').encode()
            return 200, body, "text/xml"
        if path.startswith("/images/"):
            post_id = path.rsplit("/", 1)[-1].split(".")[0]
            post = self.by_id.get(int(post_id)) if post_id.isdigit() else None
            if post is not None:
                return 200, post.path.read_bytes(), "application/octet-stream"
        return 404, b"not found", "text/plain"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- The platform ------------------------------------------------------------------------------------

def crawl_env(root: str) -> dict[str, str]:
    """Settings (as environment variables) that point ``safebooru`` at the fake site, politely but fast."""
    return {
        "KYARA_SOURCE_ROOTS": json.dumps({SOURCE: root}),
        "KYARA_CRAWL_ALLOW_PRIVATE": "127.0.0.1/32",
        "KYARA_CRAWL_POLITENESS": json.dumps({SOURCE: {"rate": 500, "concurrency": 4}}),
        "KYARA_CRAWL_JITTER": "0",
        "KYARA_WEIGHTS_DOWNLOAD": "0",  # no internet: the default recipe trains from scratch and says so
    }


def queue_empty() -> bool:
    """No task of the default queue waits or runs (django-q's ORM broker keeps a task's row until it ends)."""
    from django_q.models import OrmQ

    from apps.core.queue import queue_cluster

    return not OrmQ.objects.filter(key=queue_cluster("default")).exists()


def wait_until(done, *, what: str, deadline: Deadline, worker: subprocess.Popen, log: Path) -> float:
    """Poll ``done()`` every second (it must hold twice in a row) until it does; the seconds it took."""
    started, streak = time.perf_counter(), 0
    while streak < 2:
        if worker.poll() is not None:
            raise SystemExit(f"the worker stopped (exit {worker.returncode}) while waiting for {what}:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        deadline.check(what)
        streak = streak + 1 if done() else 0
        time.sleep(1.0)
    return time.perf_counter() - started


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    """``manage.py worker --queue default`` (crawls, suggestions, evaluations), as ``make run`` starts it."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "worker", "--queue", "default"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def crawl_all(site: FakeSafebooru, folders: list[str], p: float) -> list[int]:
    """One crawl job per character, as a plan makes them (solo posts, the auto-review policy), queued."""
    from apps.characters.models import Character, Image
    from apps.crawling.services import crawl_job_create

    characters: dict[str, int] = {}  # folder → character id, from the imported images' "<folder>/<file>" names
    for original, character in (Image.objects.filter(source_kind=Image.SourceKind.IMPORT)
                                .values_list("original_name", "character")):
        characters.setdefault(original.split("/", 1)[0], character)
    by_id = Character.objects.in_bulk(set(characters.values()))
    with site.lock:
        site.tags.update({name: by_id[pk].slug for name, pk in characters.items()})
        missing = {post.claimed for post in site.posts} - set(site.tags)
    if missing:
        raise SystemExit(f"no character was imported for {sorted(missing)[:5]}")
    jobs = []
    for name in folders:
        posts = sum(post.claimed == name for post in site.posts)
        if posts:
            jobs.append(crawl_job_create(source=SOURCE, character=by_id[characters[name]], query=site.tags[name],
                                         quota=posts, solo=True, auto_approve_min_confidence=p, origin="cli").pk)
    return jobs


# --- The counts against the truth ----------------------------------------------------------------------

@dataclass
class Counts:
    auto_approved: int
    correct: int
    precision: float | None
    recall: float | None  # share of the correctly labelled stored images approved
    mislabelled_approved: int  # the harm


def counts(approved: set[int], correct_ids: set[int]) -> Counts:
    right = len(approved & correct_ids)
    return Counts(auto_approved=len(approved), correct=right,
                  precision=round(right / len(approved), 4) if approved else None,
                  recall=round(right / len(correct_ids), 4) if correct_ids else None,
                  mislabelled_approved=len(approved) - right)


def measure(site: FakeSafebooru, job_ids: list[int], version_name: str, p: float) -> dict:
    from apps.characters.models import Image
    from apps.crawling.models import COUNTER_FIELDS, CrawlJob, SeenPost
    from apps.inference.models import ModelVersion
    from apps.review.models import ReviewBatch, ReviewDecision, Suggestion

    jobs = list(CrawlJob.objects.filter(pk__in=job_ids))
    crawled = {job.character.slug for job in jobs}
    served = [post for post in site.posts if site.tags[post.claimed] in crawled]
    version = ModelVersion.objects.get(name=version_name)
    images = list(Image.objects.filter(source_site=SOURCE).select_related("character"))
    posts = {str(post.id): post for post in site.posts}
    truth_ok = {image.pk: site.tags[posts[image.source_post_id].truth] == image.character.slug for image in images}
    correct_ids = {pk for pk, ok in truth_ok.items() if ok}
    mislabelled_ids = set(truth_ok) - correct_ids
    suggestions = {s.image_id: s for s in Suggestion.objects.filter(model_version=version, image__in=images)}
    auto = set(ReviewDecision.objects.filter(batch__kind=ReviewBatch.Kind.AUTO_APPROVE, batch__undone_at=None,
                                             action="approve").values_list("image_id", flat=True))
    true_slug = {image.pk: site.tags[posts[image.source_post_id].truth] for image in images}
    top1_right = sum(bool(s.top) and s.top[0]["slug"] == true_slug[pk] for pk, s in suggestions.items())
    flagged = {pk for pk, s in suggestions.items() if s.flagged}
    fixable = {pk for pk in flagged & mislabelled_ids if suggestions[pk].top[0]["slug"] == true_slug[pk]}
    sweep = {}
    for threshold in sorted({*THRESHOLDS, p}):
        chosen = {pk for pk, s in suggestions.items() if s.agrees and (s.claimed_probability or 0) >= threshold}
        sweep[f"{threshold:g}"] = asdict(counts(chosen, correct_ids))
    totals = {name: sum(getattr(job, name) for job in jobs) for name in COUNTER_FIELDS}
    refused = Counter()
    for job in jobs:
        refused.update(job.refused_by_reason)
    outcomes: dict[str, Counter] = {}  # what the crawl decided for each post, by whether its tag was right
    for post_id, outcome in SeenPost.objects.filter(job__in=job_ids).values_list("post_id", "outcome"):
        outcomes.setdefault(outcome, Counter())["mislabelled" if posts[post_id].mislabelled else "correct"] += 1
    at_p = asdict(counts(auto, correct_ids))
    return {
        "model_version": version.name,
        "runtime": {key: record.get("chosen") for key, record in (version.runtime_choices or {}).items()},
        "jobs": len(jobs), "job_status": dict(Counter(job.status for job in jobs)),
        "stop_reasons": dict(Counter(job.stop_reason for job in jobs)),
        "posts_served": len(served), "posts_mislabelled": sum(post.mislabelled for post in served),
        "listed": totals["listed"], "downloaded": totals["downloaded"],
        "stored": len(images), "stored_correct": len(correct_ids), "stored_mislabelled": len(mislabelled_ids),
        "near_duplicates": totals["near_duplicates"], "exact_duplicates": totals["exact_duplicates"],
        "too_small": totals["too_small"], "refused": dict(refused), "errors": totals["errors"],
        "outcomes": {outcome: dict(split) for outcome, split in sorted(outcomes.items())},
        "suggested": len(suggestions), "top1_is_truth": top1_right,
        "flagged_mislabelled": len(flagged & mislabelled_ids), "flagged_correct": len(flagged & correct_ids),
        "flagged_mislabelled_with_truth_first": len(fixable),
        "waiting_for_a_person": Image.objects.filter(source_site=SOURCE, status=Image.Status.PENDING).count(),
        "p": p, "at_p": at_p, "sweep": sweep,
        "policy_matches_suggestions": sweep[f"{p:g}"]["auto_approved"] == at_p["auto_approved"],
    }


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def report(result: dict) -> None:
    m = result["measured"]
    print(f"\nauto-review on {result['data']} (import share {result['import_share']:g}, noise {result['noise']:g}, "
          f"{m['jobs']} characters, model {m['model_version']} at {result['image_size']} px, "
          f"{result['epochs']} epochs, weights {result['weights_used']}, test top-1 {_share(result['test_top1'])}, "
          f"served by {', '.join(sorted(set(m['runtime'].values()))) or 'the default runtime'})")
    print(f"  posts served {m['posts_served']} ({m['posts_mislabelled']} mislabelled); listed {m['listed']}, "
          f"downloaded {m['downloaded']}; stored {m['stored']} ({m['stored_mislabelled']} mislabelled); "
          f"near-duplicates refused {m['near_duplicates']}, other refusals {dict(m['refused'])}, errors {m['errors']}")
    print("  each post's outcome (correctly tagged / mislabelled): " + ", ".join(
        f"{outcome} {split.get('correct', 0)}/{split.get('mislabelled', 0)}" for outcome, split in m["outcomes"].items()))
    print(f"  suggestions {m['suggested']}/{m['stored']}; the model's top-1 is the truth for {m['top1_is_truth']}; "
          f"flagged: {m['flagged_mislabelled']}/{m['stored_mislabelled']} mislabelled "
          f"({m['flagged_mislabelled_with_truth_first']} with the true character first), "
          f"{m['flagged_correct']}/{m['stored_correct']} correct")
    at = m["at_p"]
    print(f"  policy at p={m['p']:g} (what the worker did): auto-approved {at['auto_approved']}, correct "
          f"{at['correct']} (precision {_share(at['precision'])}), recall {_share(at['recall'])} of "
          f"{m['stored_correct']} correctly labelled, mislabelled approved {at['mislabelled_approved']}; "
          f"{m['waiting_for_a_person']} wait for a person"
          + ("" if m["policy_matches_suggestions"] else "  [!] differs from the Suggestions' count below"))
    print("\n  p      approved  correct  precision  recall  mislabelled approved")
    for threshold, row in m["sweep"].items():
        print(f"  {threshold:<6} {row['auto_approved']:>8}  {row['correct']:>7}  {_share(row['precision']):>9}  "
              f"{_share(row['recall']):>6}  {row['mislabelled_approved']:>20}")
    print(f"\n  seconds: {json.dumps(result['seconds'])}")


# --- The run --------------------------------------------------------------------------------------------

def run(args, work: Path, deadline: Deadline) -> dict:
    seconds: dict[str, float] = {}
    folders = class_folders(args.data)
    imported, posts = split(folders, import_share=args.import_share, noise=args.noise, seed=args.seed)
    crawled = list(folders)[: args.characters or None]
    import_dir, data_dir, log = work / "import", work / "kyara", work / "commands.log"
    data_dir.mkdir(parents=True)
    write_import_folder(imported, import_dir)
    site = FakeSafebooru(posts)
    worker = None
    try:
        env = {**platform_env(data_dir), **crawl_env(site.root)}
        os.environ.update(env)  # this process reads the same database and settings

        def step(name: str, argv: list[str]) -> dict:
            print(f"  manage.py {' '.join(argv)}", flush=True)
            result = manage(argv, env=env, deadline=deadline, log=log)
            seconds[name] = round(result["seconds"], 1)
            return result

        if step("migrate", ["migrate", "--verbosity", "0"])["returncode"]:
            raise SystemExit(f"migrate failed:\n{log.read_text()[-3000:]}")
        _checked(step("import", ["import_images", str(import_dir), "--json"]), "import_images", log)
        _checked(step("freeze", ["freeze_dataset", "--name", DATASET, "--json"]), "freeze_dataset", log)
        trained = step("train", ["train", "--dataset-version", DATASET, "--epochs", str(args.epochs),
                                 "--image-size", str(args.image_size), "--sync", "--json"])
        job = _checked(trained, "train", log)
        if trained["returncode"]:
            raise SystemExit(f"training job {job.get('id')} {job.get('status')}: {job.get('error')}")

        import django

        django.setup()
        worker_log = work / "worker.log"
        worker = start_worker(env, worker_log)
        print("  worker: runtime choice and evaluation of the new version", flush=True)
        seconds["after_training_tasks"] = round(wait_until(queue_empty, what="the tasks after training",
                                                           deadline=deadline, worker=worker, log=worker_log), 1)
        step("promote", ["set_alias", "default", job["model_version"], "--why", "bench/auto_review.py"])

        from apps.crawling.models import CrawlJob
        from apps.evaluation.models import EvaluationRun

        evaluation = EvaluationRun.objects.filter(model_version__name=job["model_version"], split="test").first()
        print(f"  {len(crawled)} crawl jobs (auto_approve_min_confidence={args.p:g})", flush=True)
        started = time.perf_counter()
        job_ids = crawl_all(site, crawled, args.p)

        def finished() -> bool:
            return queue_empty() and not CrawlJob.objects.filter(pk__in=job_ids, status__in=CrawlJob.ACTIVE).exists()

        wait_until(finished, what="the crawls and their suggestions", deadline=deadline, worker=worker,
                   log=worker_log)
        seconds["crawl_and_review"] = round(time.perf_counter() - started, 1)
        _stop(worker)
        worker = None
        measured = measure(site, job_ids, job["model_version"], args.p)
    finally:
        if worker is not None:
            _stop(worker)
        site.close()
    return {
        "data": str(args.data), "import_share": args.import_share, "noise": args.noise, "seed": args.seed,
        "epochs": args.epochs, "image_size": args.image_size, "imported": sum(map(len, imported.values())),
        "weights_used": job.get("weights_used"), "recipe": job.get("recipe"),
        "job_test_accuracy": job.get("test_accuracy"),
        "test_top1": evaluation.top1 if evaluation is not None else None,
        "fake_site_requests": dict(site.hits), "seconds": seconds, "measured": measured,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/data/pokemon32"),
                        help="class folders <series>_<character>/ (default /tmp/data/pokemon32)")
    parser.add_argument("--import-share", type=float, default=0.6, help="share of each class imported as approved")
    parser.add_argument("--noise", type=float, default=0.15, help="share of each class's posts tagged as another")
    parser.add_argument("--p", type=float, default=0.9, help="the crawls' auto_approve_min_confidence")
    parser.add_argument("--characters", type=int, default=0, help="crawl only the first N characters (0: all)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="the split and the mistags")
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway folder (printed)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder (see ../shared/datasets/README.md to build it)")
    if not 0 < args.import_share < 1 or not 0 <= args.noise < 1 or not 0 < args.p <= 1 or args.characters < 0:
        parser.error("--import-share must be in (0, 1), --noise in [0, 1), --p in (0, 1], --characters >= 0")
    work = Path(tempfile.mkdtemp(prefix="kyara-bench-auto-review-"))
    deadline = Deadline(args.deadline)
    started = time.perf_counter()
    try:
        result = run(args, work, deadline)
    except DeadlineExceeded as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
