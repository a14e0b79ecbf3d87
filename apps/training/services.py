"""Every state change of a training job: start, cancel, resume, and what the training process reports."""
from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.characters.models import DatasetItem, DatasetVersion
from apps.core.api import ServiceError
from apps.core.queue import enqueue
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
    transaction.on_commit(lambda: enqueue(LAUNCH_TASK, job.pk, group=f"training-{job.pk}"))


@transaction.atomic
def training_job_start(
    *, dataset_version: DatasetVersion, config: dict | None = None, name: str = "",
    created_by: AbstractBaseUser | None = None, launch: bool = True,
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
    if launch:
        _enqueue_launch(job)
    return job


@transaction.atomic
def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """A queued job is cancelled at once; a running one is asked to stop (it does within seconds)."""
    job = TrainingJob.objects.select_for_update().get(pk=job.pk)
    if job.status == TrainingJob.Status.QUEUED:
        job.status = TrainingJob.Status.CANCELLED
        job.stop_reason = TrainingJob.StopReason.CANCELLED
        job.finished_at = timezone.now()
        job.cancel_requested = True
        job.save(update_fields=["status", "stop_reason", "finished_at", "cancel_requested", "updated_at"])
    elif job.status == TrainingJob.Status.RUNNING:
        job.cancel_requested = True
        job.save(update_fields=["cancel_requested", "updated_at"])
    else:
        raise ServiceError("not_cancellable", f"Job {job.pk} is {job.status}; only queued or running jobs can be cancelled.",
                           status_code=409)
    return job


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_lost(job: TrainingJob, now) -> bool:
    if job.status != TrainingJob.Status.RUNNING:
        return False
    if job.hostname == socket.gethostname() and job.pid and not process_alive(job.pid):
        return True
    seen = job.heartbeat_at or job.started_at or job.launched_at or job.updated_at
    return seen is not None and now - seen > timedelta(seconds=settings.KYARA_TRAINING_LOST_AFTER)


def training_jobs_detect_lost(*, jobs=None) -> list[int]:
    """Mark running jobs whose process is gone (or silent too long) as failed, stop reason ``lost``."""
    now = timezone.now()
    queryset = jobs if jobs is not None else TrainingJob.objects.filter(status=TrainingJob.Status.RUNNING)
    lost = []
    for job in queryset:
        if not _is_lost(job, now):
            continue
        with transaction.atomic():
            updated = TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.RUNNING, pid=job.pid).update(
                status=TrainingJob.Status.FAILED, stop_reason=TrainingJob.StopReason.LOST, finished_at=now,
                error=(f"The training process (pid {job.pid} on {job.hostname or 'an unknown host'}) stopped without "
                       "reporting; its worker or machine may have died. Resume the job to continue from its last "
                       "checkpoint."), updated_at=now,
            )
        if updated:
            logger.warning("Training job %s marked lost (pid %s on %s)", job.pk, job.pid, job.hostname)
            lost.append(job.pk)
    return lost


@transaction.atomic
def training_job_resume(*, job: TrainingJob, launch: bool = True) -> TrainingJob:
    """Queue a failed, cancelled or lost job again; it continues from ``last.pt`` with the same schedule."""
    training_jobs_detect_lost(jobs=[job])
    job = TrainingJob.objects.select_for_update().get(pk=job.pk)
    if job.status not in TrainingJob.RESUMABLE:
        raise ServiceError("not_resumable", f"Job {job.pk} is {job.status}; only failed or cancelled jobs can be resumed.",
                           status_code=409)
    if not job.has_checkpoint:
        raise ServiceError("no_checkpoint", f"Job {job.pk} never finished an epoch, so there is no checkpoint to resume "
                           "from; start a new job instead.", status_code=409)
    job.status = TrainingJob.Status.QUEUED
    job.resume_requested = True
    job.cancel_requested = False
    job.launched_at = None
    job.finished_at = None
    job.stop_reason = ""
    job.error = ""
    job.traceback = ""
    job.save()
    if launch:
        _enqueue_launch(job)
    return job


# --- Reported by the launcher and the training process ------------------------------------------

def training_job_mark_launched(*, job_id: int) -> str | None:
    """The launcher takes a queued job exactly once; returns the token its process must present."""
    token = uuid.uuid4().hex
    updated = TrainingJob.objects.filter(pk=job_id, status=TrainingJob.Status.QUEUED, launched_at__isnull=True).update(
        launched_at=timezone.now(), launch_token=token, updated_at=timezone.now())
    return token if updated else None


@transaction.atomic
def training_job_claim(*, job_id: int, token: str = "", resume: bool = False) -> TrainingJob:
    """The training process takes the job: queued → running, with its pid, host and a heartbeat."""
    job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None:
        raise ServiceError("not_found", f"No training job {job_id}.", status_code=404)
    if resume and job.status in TrainingJob.RESUMABLE + (TrainingJob.Status.RUNNING,):
        if job.status == TrainingJob.Status.RUNNING:
            training_jobs_detect_lost(jobs=[job])
            job.refresh_from_db()
        if job.status in TrainingJob.RESUMABLE:
            job = training_job_resume(job=job, launch=False)
    if job.status != TrainingJob.Status.QUEUED:
        raise ServiceError("not_claimable", f"Job {job.pk} is {job.status} (pid {job.pid} on {job.hostname or '?'}); "
                           "it cannot be started again.", status_code=409)
    if token and job.launch_token != token:
        raise ServiceError("not_claimable", f"Job {job.pk} was launched by another worker.", status_code=409)
    now = timezone.now()
    job.status = TrainingJob.Status.RUNNING
    job.pid = os.getpid()
    job.hostname = socket.gethostname()
    job.heartbeat_at = now
    job.started_at = job.started_at or now
    job.attempts = F("attempts") + 1
    job.cancel_requested = False
    job.save()
    job.refresh_from_db()
    return job


def training_job_heartbeat(*, job: TrainingJob, progress: float | None = None) -> bool:
    """Write liveness (and progress); return whether a cancel was requested."""
    fields = {"heartbeat_at": timezone.now()}
    if progress is not None:
        fields["progress"] = min(max(progress, 0.0), 1.0)
    TrainingJob.objects.filter(pk=job.pk).update(**fields)
    return bool(TrainingJob.objects.filter(pk=job.pk).values_list("cancel_requested", flat=True).first())


def training_job_started(*, job: TrainingJob, info: dict) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(
        device=info["device"], precision=info["precision"], world_size=info["world_size"],
        parameters=info["parameters"], heartbeat_at=timezone.now())


def training_job_record_epochs(*, job: TrainingJob, rows: list[dict], keep_up_to: int | None = None) -> None:
    """Upsert epoch rows (a resumed job rewrites what its checkpoint says) and the job's running best."""
    with transaction.atomic():
        if keep_up_to is not None:
            TrainingEpoch.objects.filter(job=job, epoch__gt=keep_up_to).delete()
        for row in rows:
            TrainingEpoch.objects.update_or_create(job=job, epoch=row["epoch"], defaults={
                key: row[key] for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                                          "images_per_second", "timing") if key in row})
        if rows:
            last = rows[-1]
            best = max(TrainingEpoch.objects.filter(job=job), key=lambda e: (e.val_accuracy, -e.val_loss))
            update = {"epochs_run": TrainingEpoch.objects.filter(job=job).count(), "heartbeat_at": timezone.now(),
                      "best_epoch": last.get("best_epoch", best.epoch)}
            chosen = TrainingEpoch.objects.get(job=job, epoch=update["best_epoch"])
            update.update(best_val_accuracy=chosen.val_accuracy, best_val_loss=chosen.val_loss)
            TrainingJob.objects.filter(pk=job.pk).update(**update)


def training_job_fail(*, job: TrainingJob, error: str, traceback: str = "",
                      stop_reason: str = TrainingJob.StopReason.ERROR, duration: float = 0.0) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.FAILED, stop_reason=stop_reason, error=error[:10_000], traceback=traceback,
        finished_at=timezone.now(), duration_seconds=F("duration_seconds") + duration, updated_at=timezone.now())


def training_job_mark_cancelled(*, job: TrainingJob, duration: float = 0.0) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.CANCELLED, stop_reason=TrainingJob.StopReason.CANCELLED, finished_at=timezone.now(),
        duration_seconds=F("duration_seconds") + duration, updated_at=timezone.now())


def training_job_succeed(*, job: TrainingJob, result: dict, exported: dict):
    """Register the serving artifact as a model version, finish the job, then tell whoever listens."""
    from apps.inference.services import model_version_register

    metrics = {key: result.get(key) for key in ("best_val_accuracy", "best_val_loss", "best_epoch", "epochs_run",
                                                 "final_train_accuracy", "final_train_loss", "test_accuracy",
                                                 "test_loss", "stop_reason") if result.get(key) is not None}
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        model_version = model_version_register(
            name=f"job-{job.pk}-{exported['architecture']}", architecture=exported["architecture"],
            labels=exported["labels"], input_size=exported["input_size"], normalization=exported["normalization"],
            artifact=exported["path"], parameters=exported["parameters"], metrics=metrics,
            dataset_version=job.dataset_version, training_job_id=job.pk,
            notes=f"Trained by job {job.pk} ({job.name}) on {job.dataset_version.name}.",
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
