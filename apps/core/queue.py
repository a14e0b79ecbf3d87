"""One way to run background work: ``enqueue()`` over django-q2.

Tasks are passed by dotted path (a string), so a lower app can start a higher app's task without
importing it, and arguments are ids, never model instances.

Two queues, each served by a django-q cluster of its own: ``default`` (crawls, suggestions, evaluations,
improvement cycles, schedules) and ``training`` (``Q_CLUSTER["ALT_CLUSTERS"]``), so a training run that
holds its worker for hours never makes the rest wait. Every task names its cluster explicitly: a process
started by the training cluster (the training child inherits ``Q_CLUSTER_NAME``) would otherwise send
everything it queues (the evaluation after training) to the training queue.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django_q.tasks import async_task

DEFAULT_QUEUE = "default"
TRAINING_QUEUE = "training"


def _dotted(func: Callable[..., Any] | str) -> str:
    if isinstance(func, str):
        return func
    return f"{func.__module__}.{func.__qualname__}"


def queue_cluster(queue: str = DEFAULT_QUEUE) -> str:
    """The django-q cluster name (its broker's list key) that serves ``queue``."""
    clusters = {DEFAULT_QUEUE: settings.Q_CLUSTER["name"], TRAINING_QUEUE: settings.KYARA_TRAINING_QUEUE_NAME}
    if queue not in clusters:
        raise ValueError(f"Unknown queue {queue!r}; the queues are {', '.join(clusters)}.")
    return clusters[queue]


def enqueue(func: Callable[..., Any] | str, *args: Any, group: str | None = None, queue: str = DEFAULT_QUEUE,
            **kwargs: Any) -> str:
    """Queue ``func(*args, **kwargs)`` on ``queue`` (``default`` or ``training``) and return the task id.

    With ``KYARA_RUN_TASKS_INLINE`` (settings) the task runs in this process instead; that is for
    scripts and single-shot commands (``--sync``), not a replacement for a worker in tests.
    """
    options: dict[str, Any] = {"cluster": queue_cluster(queue)}
    if group:
        options["group"] = group
    if getattr(settings, "KYARA_RUN_TASKS_INLINE", False):
        options["sync"] = True
    return async_task(_dotted(func), *args, q_options=options, **kwargs)
