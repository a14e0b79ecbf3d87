from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class JobStatus(models.TextChoices):
    """The life of a background job (crawl, training): every job model uses these states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Heartbeat(models.Model):
    """Written by the ``heartbeat`` task: proof that a worker picked up work."""

    token = models.CharField(max_length=64, unique=True)
    worker_pid = models.IntegerField()
    seen_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.token} by pid {self.worker_pid}"
