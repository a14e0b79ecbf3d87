"""What the improvement app does when a background task ends: advance the cycle that waited for it."""
from __future__ import annotations

import logging

from apps.core.queue import enqueue

logger = logging.getLogger(__name__)


def advance_after_child_task(sender, task: dict, **kwargs) -> None:
    """django-q's ``post_execute`` (sent by a cluster's monitor after each task, whichever cluster ran it): a
    crawl, training launch or evaluation of a running cycle has ended, so its cycle may go on now rather than
    at the next scheduled advance. Never raises: a monitor must not stop over it."""
    from .services import ADVANCE_TASK, cycles_for_task

    try:
        for cycle_id in cycles_for_task(str(task.get("func", "")), task.get("args") or ()):
            enqueue(ADVANCE_TASK, cycle_id, group=f"cycle-{cycle_id}")
    except Exception:  # noqa: BLE001 - the schedule advances the cycle within a minute anyway
        logger.exception("Could not queue the advance of a cycle after task %s", task.get("name"))
