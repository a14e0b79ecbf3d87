"""django-q tasks of improvement cycles: thin, and they take ids."""
from __future__ import annotations

from . import services


def advance_cycle(cycle_id: int) -> dict:
    """Run whatever step of the cycle can run now, and return (queued again by its children and the schedule)."""
    cycle = services.cycle_advance(cycle_id=cycle_id)
    if cycle is None:
        return {"cycle": cycle_id, "status": "missing"}
    return {"cycle": cycle.pk, "status": cycle.status, "stage": cycle.stage}


def advance_cycles() -> list[int]:
    """The ``cycles: advance`` schedule: an advance for every cycle under way."""
    return services.cycles_advance_all()


def start_weekly_cycle() -> int | None:
    """The ``cycles: weekly`` schedule (KYARA_CYCLE_WEEKLY)."""
    cycle = services.cycle_start_weekly()
    return cycle.pk if cycle else None
