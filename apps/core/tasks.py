"""Core tasks: a heartbeat a deployment (and the test suite) can use to prove a worker is alive."""
from __future__ import annotations

import os

from django.core.cache import cache


def heartbeat(token: str) -> dict:
    """Record that a worker ran this task, visible to every process sharing the cache or database."""
    from .models import Heartbeat

    Heartbeat.objects.update_or_create(token=token, defaults={"worker_pid": os.getpid()})
    cache.set(f"heartbeat:{token}", os.getpid(), 300)
    return {"token": token, "pid": os.getpid()}
