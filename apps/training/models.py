"""Training jobs and their epochs. The job's state lives here; django-q's tables are never read."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

from apps.core.models import Job
from apps.core.redaction import RedactedTextField


class TrainingJob(Job):
    """One training run of a dataset version; its process (``manage.py train_job``) holds the launch token."""

    class StopReason(models.TextChoices):
        COMPLETED = "completed", "all epochs run"
        EARLY_STOPPING = "early_stopping", "early stopping"
        CANCELLED = "cancelled"
        ERROR = "error"
        LOST = "lost", "process or worker died"
        INTERRUPTED = "interrupted", "terminated by a signal"

    name = models.CharField(max_length=120, blank=True)
    dataset_version = models.ForeignKey(
        "characters.DatasetVersion", on_delete=models.PROTECT, related_name="training_jobs"
    )
    config = models.JSONField(default=dict, help_text="Every hyperparameter (apps.ml.config.TrainConfig)")
    resume_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    # Where it ran and how far it got
    device = models.CharField(max_length=40, blank=True)
    precision = models.CharField(max_length=10, blank=True)
    world_size = models.PositiveSmallIntegerField(default=1)
    weights_used = models.CharField(max_length=500, blank=True,
                                    help_text="The starting weights the run actually used: imagenet, none or a file")
    weights_reason = models.CharField(max_length=500, blank=True, help_text="Why those weights (weights: auto)")
    recipe = models.CharField(max_length=20, blank=True, help_text="The recipe its defaults came from")
    epochs_run = models.PositiveIntegerField(default=0)
    best_epoch = models.PositiveIntegerField(null=True, blank=True)
    best_val_accuracy = models.FloatField(null=True, blank=True)
    best_val_loss = models.FloatField(null=True, blank=True)
    test_accuracy = models.FloatField(null=True, blank=True)
    stop_reason = models.CharField(max_length=20, choices=StopReason.choices, blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="What the engine reported at the end")

    # What it left
    run_dir = models.CharField(max_length=500, blank=True, help_text="config.json, metrics.csv, last.pt, best.pt")
    log_path = models.CharField(max_length=500, blank=True)
    artifact = models.CharField(max_length=500, blank=True, help_text="Serving artifact, relative to ARTIFACTS_DIR")
    size_bytes = models.PositiveBigIntegerField(default=0)
    parameters = models.PositiveBigIntegerField(default=0)
    duration_seconds = models.FloatField(default=0.0, help_text="Summed over every attempt")
    model_version = models.ForeignKey(
        "inference.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="training_jobs"
    )
    # The log's last lines: a URL with a key or a database password in them is stored redacted, as error is.
    traceback = RedactedTextField(blank=True)
    launched_at = models.DateTimeField(null=True, blank=True, help_text="When a worker started its process")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name or f"training job {self.pk}"

    def lost_message(self) -> str:
        return (f"The training process (pid {self.pid} on {self.hostname or 'an unknown host'}) stopped without "
                "reporting; its worker or machine may have died. Resume the job to continue from its last "
                "checkpoint.")

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else settings.KYARA_TRAINING_RUNS_DIR / f"job-{self.pk}"

    @property
    def has_checkpoint(self) -> bool:
        return (self.run_path / "last.pt").is_file()


class TrainingEpoch(models.Model):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="epochs")
    epoch = models.PositiveIntegerField()
    train_loss = models.FloatField()
    train_accuracy = models.FloatField()
    val_loss = models.FloatField()
    val_accuracy = models.FloatField()
    lr = models.FloatField()
    seconds = models.FloatField()
    images_per_second = models.FloatField(default=0.0)
    timing = models.JSONField(default=dict, blank=True, help_text="Seconds waiting for data, augmenting, forward, backward")
    recorded_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job", "epoch"]
        constraints = [models.UniqueConstraint(fields=["job", "epoch"], name="training_epoch_unique")]

    def __str__(self) -> str:
        return f"job {self.job_id} epoch {self.epoch}"
