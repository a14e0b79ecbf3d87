"""Every state change of a training job: start, cancel, resume, and what the training process reports."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.characters.models import DatasetItem, DatasetVersion
from apps.core.api import ServiceError
from apps.core.jobs import (
    job_cancel,
    job_claim,
    job_finish,
    job_heartbeat,
    job_launch,
    job_requeue,
    jobs_mark_lost,
)
from apps.core.queue import TRAINING_QUEUE, enqueue
from apps.ml.config import ConfigError, TrainConfig

from .models import TrainingEpoch, TrainingJob
from .signals import training_job_succeeded

logger = logging.getLogger(__name__)

LAUNCH_TASK = "apps.training.tasks.launch_training_job"


def _validated_config(config: dict | None) -> TrainConfig:
    try:
        return TrainConfig.from_dict(config)
    except ConfigError as exc:
        raise ServiceError("invalid_config", f"The training config is refused: {exc}", problems=exc.problems) from None


def _check_dataset(version: DatasetVersion) -> None:
    splits = dict.fromkeys(("train", "val"), 0)
    classes = set()
    for split, character_id in DatasetItem.objects.filter(version=version).values_list("split", "character_id"):
        splits[split] = splits.get(split, 0) + 1
        if split == "train":
            classes.add(character_id)
    if len(classes) < 2:
        raise ServiceError("dataset_unusable",
                           f"Dataset version {version.name!r} has {len(classes)} character(s) with training images; "
                           "a classifier needs at least 2.")
    if not splits["val"]:
        raise ServiceError("dataset_unusable", f"Dataset version {version.name!r} has no validation images; "
                           "freeze a version with a val fraction above 0.")


def _enqueue_launch(job: TrainingJob) -> None:
    transaction.on_commit(lambda: enqueue(LAUNCH_TASK, job.pk, group=f"training-{job.pk}", queue=TRAINING_QUEUE))


@transaction.atomic
def training_job_start(
    *, dataset_version: DatasetVersion, config: dict | None = None, name: str = "",
    created_by: AbstractBaseUser | None = None, queue: bool = True,
) -> TrainingJob:
    """Validate the config and the dataset, create the job and (after commit) queue its launch."""
    train_config = _validated_config(config)
    _check_dataset(dataset_version)
    job = TrainingJob(
        dataset_version=dataset_version, name=name.strip(), config=train_config.to_dict(),
        created_by=created_by if created_by is not None and created_by.is_authenticated else None,
    )
    job.full_clean()
    job.save()
    # Unique even where ids are reused (a reset database), so no job ever meets another's checkpoints.
    job.run_dir = str(settings.KYARA_TRAINING_RUNS_DIR / f"job-{job.pk}-{uuid.uuid4().hex[:8]}")
    job.log_path = str(Path(job.run_dir) / "train.log")
    if not job.name:
        job.name = f"{dataset_version.name} {train_config.architecture} #{job.pk}"
    job.save(update_fields=["run_dir", "log_path", "name", "updated_at"])
    if queue:
        _enqueue_launch(job)
    return job


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """A queued job is cancelled at once; a running one is asked to stop (it does within seconds)."""
    return job_cancel(job, refused_code="not_cancellable")


def _has_checkpoint(job: TrainingJob) -> None:
    if not job.has_checkpoint:
        raise ServiceError("no_checkpoint", f"Job {job.pk} never finished an epoch, so there is no checkpoint to resume "
                           "from; start a new job instead.", status_code=409)


@transaction.atomic
def training_job_resume(*, job: TrainingJob, queue: bool = True) -> TrainingJob:
    """Queue a failed, cancelled or lost job again; it continues from ``last.pt`` with the same schedule.
    A process still running under the old launch token can write nothing more."""
    job = job_requeue(job, refused_code="not_resumable", verb="resumed", check=_has_checkpoint,
                      resume_requested=True, launched_at=None, traceback="")
    if queue:
        _enqueue_launch(job)
    return job


# --- Reported by the launcher and the training process ------------------------------------------

def training_job_mark_launched(*, job_id: int) -> str | None:
    """The launcher takes a queued job exactly once; returns the token its process must present."""
    return job_launch(TrainingJob, job_id, launched_at=timezone.now())


def training_job_claim(*, job_id: int, token: str = "", resume: bool = False) -> TrainingJob:
    """The training process takes the job: queued → running, with its pid, host and a heartbeat."""
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None:
        raise ServiceError("not_found", f"No training job {job_id}.", status_code=404)
    if resume and job.status in TrainingJob.RESUMABLE + (TrainingJob.Status.RUNNING,):
        jobs_mark_lost(jobs=[job])  # a running job is resumed only when its process died
        job.refresh_from_db()
        if job.status in TrainingJob.RESUMABLE:
            job = training_job_resume(job=job, queue=False)
    claimed = job_claim(TrainingJob, job_id, token=token)
    if claimed is None:
        job.refresh_from_db()
        if job.status == TrainingJob.Status.QUEUED and token:
            raise ServiceError("not_claimable", f"Job {job.pk} was launched by another worker.", status_code=409)
        raise ServiceError("not_claimable", f"Job {job.pk} is {job.status} (pid {job.pid} on {job.hostname or '?'}); "
                           "it cannot be started again.", status_code=409)
    return claimed


def training_job_started(*, job: TrainingJob, info: dict) -> bool:
    return job_heartbeat(job, device=info["device"], precision=info["precision"], world_size=info["world_size"],
                         parameters=info["parameters"], weights_used=info.get("weights", "")[:500],
                         weights_reason=info.get("weights_reason", "")[:500], recipe=info.get("recipe", ""))


def training_job_record_epochs(*, job: TrainingJob, rows: list[dict], keep_up_to: int | None = None) -> None:
    """Upsert epoch rows (a resumed job rewrites what its checkpoint says) and the job's running best;
    nothing at all once another process holds the job."""
    with transaction.atomic():
        if not job_heartbeat(job):
            return
        if keep_up_to is not None:
            TrainingEpoch.objects.filter(job=job, epoch__gt=keep_up_to).delete()
        for row in rows:
            TrainingEpoch.objects.update_or_create(job=job, epoch=row["epoch"], defaults={
                key: row[key] for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                                          "images_per_second", "timing") if key in row})
        if rows:
            last = rows[-1]
            best = max(TrainingEpoch.objects.filter(job=job), key=lambda e: (e.val_accuracy, -e.val_loss))
            update = {"epochs_run": TrainingEpoch.objects.filter(job=job).count(),
                      "best_epoch": last.get("best_epoch", best.epoch)}
            chosen = TrainingEpoch.objects.get(job=job, epoch=update["best_epoch"])
            update.update(best_val_accuracy=chosen.val_accuracy, best_val_loss=chosen.val_loss)
            TrainingJob.objects.filter(pk=job.pk).update(**update)


def training_job_fail(*, job: TrainingJob, error: str, traceback: str = "",
                      stop_reason: str = TrainingJob.StopReason.ERROR, duration: float = 0.0) -> bool:
    return job_finish(job, status=TrainingJob.Status.FAILED, stop_reason=stop_reason, error=error,
                      traceback=traceback, duration_seconds=F("duration_seconds") + duration)


def training_job_mark_cancelled(*, job: TrainingJob, duration: float = 0.0) -> bool:
    return job_finish(job, status=TrainingJob.Status.CANCELLED, stop_reason=TrainingJob.StopReason.CANCELLED,
                      duration_seconds=F("duration_seconds") + duration)


def training_job_succeed(*, job: TrainingJob, result: dict, exported: dict):
    """Register the serving artifact as a model version, finish the job, then tell whoever listens; nothing
    when another process holds the job now."""
    from apps.inference.services import model_version_register

    metrics = {key: result.get(key) for key in ("best_val_accuracy", "best_val_loss", "best_epoch", "epochs_run",
                                                 "final_train_accuracy", "final_train_loss", "test_accuracy",
                                                 "test_loss", "stop_reason") if result.get(key) is not None}
    with transaction.atomic():
        if not job_heartbeat(job):  # the token check, and the row's lock for what follows
            logger.warning("Training job %s: another process holds it now; its result is not recorded", job.pk)
            job.refresh_from_db()
            return job
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        model_version = model_version_register(
            name=f"job-{job.pk}-{exported['architecture']}", architecture=exported["architecture"],
            labels=exported["labels"], input_size=exported["input_size"], normalization=exported["normalization"],
            artifact=exported["path"], parameters=exported["parameters"], metrics=metrics,
            dataset_version=job.dataset_version, training_job_id=job.pk,
            notes=f"Trained by job {job.pk} ({job.name}) on {job.dataset_version.name}.",
            calibration={**exported["calibration"], "fitted_by": "training"} if exported.get("calibration") else None,
        )
        job.status = TrainingJob.Status.SUCCEEDED
        job.stop_reason = result["stop_reason"]
        job.model_version = model_version
        job.artifact = model_version.artifact
        job.size_bytes = model_version.size_bytes
        job.parameters = exported["parameters"]
        job.epochs_run = result["epochs_run"]
        job.best_epoch = result["best_epoch"]
        job.best_val_accuracy = result["best_val_accuracy"]
        job.best_val_loss = result["best_val_loss"]
        job.test_accuracy = result.get("test_accuracy")
        job.progress = 1.0
        job.summary = result
        job.duration_seconds = (job.duration_seconds or 0) + result.get("duration_seconds", 0.0)
        job.finished_at = timezone.now()
        job.save()

        def _announce() -> None:
            for receiver, response in training_job_succeeded.send_robust(sender=TrainingJob, job=job,
                                                                         model_version=model_version):
                if isinstance(response, Exception):
                    logger.error("A training_job_succeeded receiver (%s) failed: %r", receiver, response)

        transaction.on_commit(_announce)
    return job
