from django.db import models

from .redaction import RedactedTextField


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class JobStatus(models.TextChoices):
    """The life of a background job (crawl, training, evaluation): every job model uses these states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Job(TimeStampedModel):
    """What every background job shares; ``apps.core.jobs`` owns its state changes.

    A worker takes a queued job with ``job_claim``, which hands it a fresh ``launch_token``; every later
    write (heartbeat, counters, the end) is an UPDATE filtered on that token, so once a retry or a resume
    has taken the job over, a process that is still alive cannot write to it any more. A running job
    whose heartbeat is older than ``KYARA_JOB_LOST_AFTER`` (or whose process on this host is gone) is
    marked lost by the one scheduled sweep, never by a page view.
    """

    Status = JobStatus
    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    RESUMABLE = (Status.FAILED, Status.CANCELLED)
    # The stop reason a lost job gets (the crawling app keeps its historical "worker_lost").
    LOST_REASON = "lost"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    stop_reason = models.CharField(max_length=20, blank=True)
    progress = models.FloatField(default=0.0, help_text="Fraction done, 0-1")
    # Stored through redact_secrets: an error quoting a URL or a request never keeps an API key or password.
    error = RedactedTextField(blank=True, help_text="Why it failed, or the last problem it met while running")
    launch_token = models.CharField(max_length=32, blank=True,
                                    help_text="Held by the process running it; every write presents it")
    attempts = models.PositiveIntegerField(default=0)
    pid = models.IntegerField(null=True, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def lost_message(self) -> str:
        """The error a lost job shows; a person reading it should know what to do next."""
        where = f"pid {self.pid} on {self.hostname}" if self.pid else "its worker"
        return f"lost: {where} stopped reporting (the worker or machine may have died); run it again."


class Heartbeat(models.Model):
    """Written by the ``heartbeat`` task: proof that a worker picked up work."""

    token = models.CharField(max_length=64, unique=True)
    worker_pid = models.IntegerField()
    seen_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.token} by pid {self.worker_pid}"
