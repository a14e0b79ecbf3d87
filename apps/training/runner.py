"""What ``manage.py train_job ID`` does: turn a job row into an ``apps.ml.engine.fit`` call and its
dicts back into rows. Runs in its own process (or one per rank under torchrun)."""
from __future__ import annotations

import functools
import logging
import signal
import threading
import time
import traceback
from pathlib import Path

from django.conf import settings

from apps.core.jobs import JobWatcher
from apps.core.storage import read_stored
from apps.inference.loading import load_serving_predictor
from apps.ml import distributed
from apps.ml.checkpoints import LAST, load_checkpoint
from apps.ml.config import TrainConfig
from apps.ml.data import Sample
from apps.ml.engine import REFIT, Callbacks, export_best, fit
from apps.ml.gallery import DEFAULT_MAPPING, fit_scale_on

from . import services
from .models import TrainingJob

logger = logging.getLogger(__name__)


def job_samples(job: TrainingJob) -> tuple[list[str], dict[str, list[Sample]]]:
    """Class names (character slugs, sorted) and the samples of each split, from the frozen manifest."""
    items = list(job.dataset_version.items.select_related("image", "character").order_by("id"))
    class_names = sorted({item.character.slug for item in items})
    index = {slug: i for i, slug in enumerate(class_names)}
    splits: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for item in items:
        splits[item.split].append(Sample(key=item.image.file.name, label=index[item.character.slug],
                                         read=functools.partial(read_stored, item.image.file.name)))
    return class_names, splits


class JobReporter:
    """The engine's callbacks: progress and cancel through the job's watcher (a thread that writes the
    heartbeat, so the training loop never waits on the database and a long decode is never taken for a
    death), epoch rows."""

    def __init__(self, job: TrainingJob, watcher: JobWatcher | None = None) -> None:
        self.job = job
        self.watcher = watcher
        self.signalled: int | None = None
        self.cancel_seen = False

    def handle_signal(self, signum, _frame) -> None:
        logger.warning("Training job %s got signal %s; stopping at the next step", self.job.pk, signum)
        self.signalled = signum

    def should_stop(self) -> bool:
        if self.signalled is not None or self.cancel_seen:
            return True
        if self.watcher is not None and self.watcher.stop.is_set():  # cancelled, or taken over by a resume
            self.cancel_seen = self.watcher.cancelled
            return True
        return False

    def on_progress(self, fraction: float) -> None:
        if self.watcher is not None:
            self.watcher.progress = fraction  # written with the next heartbeat

    def on_start(self, info: dict) -> None:
        services.training_job_started(job=self.job, info=info)

    def on_epoch(self, row: dict) -> None:
        services.training_job_record_epochs(job=self.job, rows=[row])
        logger.info("job %s epoch %d: train loss %.4f acc %.3f, val loss %.4f acc %.3f, lr %.2e, %.1fs",
                    self.job.pk, row["epoch"], row["train_loss"], row["train_accuracy"], row["val_loss"],
                    row["val_accuracy"], row["lr"], row["seconds"])

    def callbacks(self) -> Callbacks:
        return Callbacks(on_start=self.on_start, on_epoch=self.on_epoch, on_progress=self.on_progress,
                         should_stop=self.should_stop)


def fit_gallery_mapping(run_dir: Path, served: Path, samples: dict[str, list[Sample]]) -> dict:
    """How the gallery's characters are put on this model's scale (``apps.ml.gallery.fit_scale_on``): fitted on
    val through the weights that never trained on it (the selection's, when the served model is a refit)."""
    if not samples["val"] or not samples["train"]:
        return {**DEFAULT_MAPPING, "fitted": False, "why": "no val or train images to fit on"}
    artifact = served
    if (run_dir / REFIT).is_file():
        artifact = run_dir / "selection-for-gallery.pt"
        export_best(run_dir, artifact, selection=True)
    try:
        predictor = load_serving_predictor(artifact, warm=False)
        cap = settings.KYARA_CALIBRATION_IMAGES
        return {**fit_scale_on(predictor, [(s.read, s.label) for s in spread(samples["train"], cap)],
                                 [(s.read, s.label) for s in spread(samples["val"], cap)],
                                 batch_size=settings.KYARA_EVAL_BATCH_SIZE),
                "fitted_with": "selection" if artifact != served else "served"}
    finally:
        if artifact != served:
            artifact.unlink(missing_ok=True)


def spread(items: list, limit: int) -> list:
    """At most ``limit`` of ``items``, evenly spread over them (every class keeps its share)."""
    if len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def measure_test(artifact: Path, samples: list[Sample]) -> dict:
    """The exported model's test accuracy through the server's own predictor (same decode, geometry,
    backend), so the job's number and what ``evaluate`` and ``/predict`` make of the same files are one."""
    if not samples:
        return {}
    predictor = load_serving_predictor(artifact)
    done = predictor.predict_many((sample.read() for sample in samples), batch_size=settings.KYARA_EVAL_BATCH_SIZE)
    return {"test_accuracy": done.accuracy([sample.label for sample in samples]), "test_images": len(samples),
            "test_rejected": len(done.rejected), "test_backend": predictor.backend_name}


def _restore_epoch_rows(job: TrainingJob, run_dir: Path) -> None:
    """A process killed between its checkpoint and its row write: the checkpoint is the truth."""
    state = load_checkpoint(run_dir / LAST)
    services.training_job_record_epochs(job=job, rows=state["history"], keep_up_to=int(state["epoch"]))


def run_job(job_id: int, *, resume: bool = False, token: str = "") -> TrainingJob:
    """Train job ``job_id`` in this process; every rank of a torchrun calls it, rank 0 reports."""
    rank = distributed.env_info()
    if rank.is_main:
        job = services.training_job_claim(job_id=job_id, token=token, resume=resume)
    else:
        job = TrainingJob.objects.get(pk=job_id)
    resume = resume or job.resume_requested
    watcher = JobWatcher(job) if rank.is_main else None
    reporter = JobReporter(job, watcher)
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        previous = {sig: signal.signal(sig, reporter.handle_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    started = time.perf_counter()
    run_dir = job.run_path
    if watcher is not None:
        watcher.start()
    try:
        config = TrainConfig.from_dict(job.config)
        if not config.threads and settings.KYARA_TRAINING_THREADS:
            config.threads = settings.KYARA_TRAINING_THREADS
        class_names, samples = job_samples(job)
        if resume and rank.is_main:
            _restore_epoch_rows(job, run_dir)
        cache = Path(settings.KYARA_TRAINING_DECODED_CACHE) if settings.KYARA_TRAINING_DECODED_CACHE else None
        result = fit(config, train=samples["train"], val=samples["val"], class_names=class_names, run_dir=run_dir,
                     resume=resume, cache_dir=cache, callbacks=reporter.callbacks() if rank.is_main else None,
                     weights_dir=settings.KYARA_WEIGHTS_DIR, download_weights=settings.KYARA_WEIGHTS_DOWNLOAD)
        if not rank.is_main:
            return job
        elapsed = time.perf_counter() - started
        if result["stop_reason"] == "cancelled":
            _record_stop(job, reporter, elapsed)
        else:
            path = settings.KYARA_TRAINING_MODELS_DIR / f"{run_dir.name}-{config.architecture}.pt"
            exported = export_best(run_dir, path, metrics={k: result.get(k) for k in (
                "best_val_accuracy", "best_epoch", "epochs_run") if result.get(k) is not None})
            result.update(measure_test(path, samples["test"]))
            exported["calibration"] = {**(exported.get("calibration") or {}),
                                       "gallery": fit_gallery_mapping(run_dir, path, samples)}
            result["duration_seconds"] = time.perf_counter() - started
            services.training_job_succeed(job=job, result=result, exported=exported)
    except InterruptedError:  # stopped while decoding images, before the first step
        if rank.is_main:
            _record_stop(job, reporter, time.perf_counter() - started)
    except BaseException as exc:
        if rank.is_main:
            services.training_job_fail(job=job, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                                       duration=time.perf_counter() - started)
        raise
    finally:
        if watcher is not None:
            watcher.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    job.refresh_from_db()
    return job


def _record_stop(job: TrainingJob, reporter: JobReporter, elapsed: float) -> None:
    """The engine stopped early on request: a cancel, or a signal (then the job stays resumable)."""
    if reporter.cancel_seen or TrainingJob.objects.filter(pk=job.pk, cancel_requested=True).exists():
        services.training_job_mark_cancelled(job=job, duration=elapsed)
    else:
        services.training_job_fail(job=job, error=f"Interrupted by signal {reporter.signalled}; resume the job to "
                                   "continue from its last checkpoint.", stop_reason=TrainingJob.StopReason.INTERRUPTED,
                                   duration=elapsed)
