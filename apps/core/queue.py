"""One way to run background work: ``enqueue()`` over django-q2.

Tasks are passed by dotted path (a string), so a lower app can start a higher app's task without
importing it, and arguments are ids, never model instances.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django_q.tasks import async_task


def _dotted(func: Callable[..., Any] | str) -> str:
    if isinstance(func, str):
        return func
    return f"{func.__module__}.{func.__qualname__}"


def enqueue(func: Callable[..., Any] | str, *args: Any, group: str | None = None, **kwargs: Any) -> str:
    """Queue ``func(*args, **kwargs)`` for a qcluster worker and return the task id.

    With ``KYARA_RUN_TASKS_INLINE`` (settings) the task runs in this process instead; that is for
    scripts and single-shot commands (``--sync``), not a replacement for a worker in tests.
    """
    options: dict[str, Any] = {}
    if group:
        options["group"] = group
    if getattr(settings, "KYARA_RUN_TASKS_INLINE", False):
        options["sync"] = True
    return async_task(_dotted(func), *args, q_options=options, **kwargs)
