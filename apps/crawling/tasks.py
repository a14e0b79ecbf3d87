"""Crawl tasks run by a qcluster worker: thin functions that take ids."""
from __future__ import annotations


def run_crawl_job(job_id: int) -> dict:
    from .services import crawl_job_run

    job = crawl_job_run(job_id=job_id)
    return {"job": job_id, "status": job.status if job else "missing"}
