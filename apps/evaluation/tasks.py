"""django-q tasks: thin, and they take ids."""
from __future__ import annotations

from .services import evaluation_run_execute


def run_evaluation(run_id: int) -> dict:
    run = evaluation_run_execute(run_id=run_id)
    if run is None:
        return {"run": run_id, "ran": False}
    return {"run": run.pk, "ran": True, "status": run.status, "top1": run.top1, "error": run.error}
