"""A real qcluster worker runs crawl jobs end to end: live counters, a rerun that adds nothing, cancel."""
from __future__ import annotations

import pytest

from apps.characters.models import Image
from apps.crawling.models import CrawlJob
from tests.conftest import wait_for
from tests.crawling.conftest import STANDARD_ACCEPTED

pytestmark = [pytest.mark.queue, pytest.mark.slow, pytest.mark.backend]


def finished(job_id):
    job = CrawlJob.objects.get(pk=job_id)
    return job if job.status in CrawlJob.FINISHED else None


def test_a_worker_runs_a_job_and_a_second_run_adds_nothing(crawl_qcluster, staff_api_client, character, world):
    payload = {"source": "safebooru", "character": "hu-tao", "quota": 50}
    job_id = staff_api_client.post("/api/v1/crawl-jobs/", payload, format="json").json()["id"]
    job = wait_for(lambda: finished(job_id), timeout=90, message="the crawl job to finish in the worker")
    assert job.status == "succeeded", job.error
    assert job.accepted == STANDARD_ACCEPTED == Image.objects.filter(character=character).count()
    assert job.task_id and job.started_at and job.finished_at and job.heartbeat_at
    assert job.errors_by_kind == {"truncated": 1, "private_address": 1}

    second_id = staff_api_client.post("/api/v1/crawl-jobs/", payload, format="json").json()["id"]
    second = wait_for(lambda: finished(second_id), timeout=60, message="the second run")
    assert second.status == "succeeded" and second.accepted == 0 and second.downloaded == 0
    assert Image.objects.count() == STANDARD_ACCEPTED


def test_cancel_stops_a_running_job_within_seconds(crawl_qcluster, staff_api_client, character, world):
    world.posts = []
    world.endless = True
    world.image_delay = 0.3  # a slow site with no end
    job_id = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "character": "hu-tao",
                                                            "quota": 1000}, format="json").json()["id"]
    wait_for(lambda: CrawlJob.objects.filter(pk=job_id, status="running", accepted__gte=1).exists(), timeout=60,
             message="the job to run and report progress")
    live = staff_api_client.get(f"/api/v1/crawl-jobs/{job_id}/").json()
    assert live["status"] == "running" and live["downloaded"] >= 1  # counters visible while it runs
    assert staff_api_client.post(f"/api/v1/crawl-jobs/{job_id}/cancel/").status_code == 200
    job = wait_for(lambda: finished(job_id), timeout=8, message="the cancel to take effect")
    assert job.status == "cancelled" and job.stop_reason == "cancelled"
    hits = sum(world.hits.values())
    import time

    time.sleep(1.0)
    assert sum(world.hits.values()) == hits  # nothing more is requested once cancelled
