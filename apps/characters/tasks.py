"""django-q tasks: thin, and they take ids."""
from __future__ import annotations

from .services.import_jobs import import_job_run


def run_import_job(job_id: int) -> dict:
    job = import_job_run(job_id=job_id)
    if job is None:
        return {"import": job_id, "ran": False}
    return {"import": job.pk, "ran": True, "status": job.status, "new": job.summary.get("new"), "error": job.error}
