"""Core tasks: a heartbeat a deployment (and the test suite) can use to prove a worker is alive, and the
one sweep that marks jobs whose process died."""
from __future__ import annotations

import os

from django.core.cache import cache


def heartbeat(token: str) -> dict:
    """Record that a worker ran this task, visible to every process sharing the cache or database."""
    from .models import Heartbeat

    Heartbeat.objects.update_or_create(token=token, defaults={"worker_pid": os.getpid()})
    cache.set(f"heartbeat:{token}", os.getpid(), 300)
    return {"token": token, "pid": os.getpid()}


def sweep_lost_jobs() -> dict:
    """Scheduled (``jobs: mark lost``, every KYARA_JOB_SWEEP_MINUTES): running jobs whose process died
    become failed with stop reason ``lost``, so they can be retried or resumed."""
    from .jobs import jobs_mark_lost

    return jobs_mark_lost()
