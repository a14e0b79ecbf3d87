from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Heartbeat(models.Model):
    """Written by the ``heartbeat`` task: proof that a worker picked up work."""

    token = models.CharField(max_length=64, unique=True)
    worker_pid = models.IntegerField()
    seen_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.token} by pid {self.worker_pid}"
