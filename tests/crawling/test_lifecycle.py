"""A crawl on the shared job lifecycle (apps.core.jobs): a job waiting out a 429's Retry-After keeps its
heartbeat and is never taken for dead, and a retry that takes a job over stops the old copy, whose writes
are refused, so two copies never crawl together."""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.core.jobs import jobs_mark_lost
from apps.crawling.models import CrawlJob, SeenPost
from apps.crawling.services import crawl_job_create, crawl_job_retry, crawl_job_run
from tests.conftest import running_qcluster, wait_for
from tests.crawling.conftest import crawl_environment, standard_posts

pytestmark = [pytest.mark.queue, pytest.mark.slow, pytest.mark.backend]

LOST_AFTER = 1.5  # seconds without a heartbeat before the sweep takes a job for dead
RETRY_AFTER = 4  # the site's Retry-After on the first listing request: well past LOST_AFTER


def test_a_crawl_waiting_out_retry_after_keeps_beating_and_is_never_marked_lost(
        transactional_db, world, tmp_path, character, settings):
    world.posts = standard_posts(["ok"] * 3)
    world.listing_429 = 1
    world.retry_after = str(RETRY_AFTER)
    settings.KYARA_JOB_LOST_AFTER = LOST_AFTER  # the sweep below, run in this process
    env = {key: value if isinstance(value, str) else json.dumps(value, default=str)
           for key, value in crawl_environment(world, tmp_path).items()}
    env.update(KYARA_CRAWL_ALLOW_PRIVATE="127.0.0.1/32", KYARA_CRAWL_LOCAL_ROOT=str(tmp_path),
               KYARA_CRAWL_MAX_RETRY_AFTER="30", KYARA_JOB_HEARTBEAT_SECONDS="0.3", KYARA_JOB_POLL_SECONDS="0.1",
               KYARA_JOB_LOST_AFTER=str(LOST_AFTER))
    with running_qcluster("qcluster-backoff.log", **env):
        job = crawl_job_create(source="danbooru", character=character, quota=3)  # queued for the worker
        wait_for(lambda: world.hits["/posts.json"] >= 1, timeout=60, message="the first (429) listing request")
        first_429 = world.hit_times["/posts.json"][0]
        sweeps, beats = [], set()
        while world.hits["/posts.json"] < 2:  # the job is waiting out the Retry-After
            assert jobs_mark_lost() == {}, "a live job waiting out a Retry-After was marked lost"
            sweeps.append(time.monotonic())
            beats.add(CrawlJob.objects.values_list("heartbeat_at", flat=True).get(pk=job.pk))
            assert time.monotonic() - first_429 < RETRY_AFTER + 20, "the job never listed again"
            time.sleep(0.1)
        job = wait_for(lambda: CrawlJob.objects.filter(pk=job.pk, status__in=CrawlJob.FINISHED).first(),
                       timeout=60, message="the crawl to finish")
    second_listing = world.hit_times["/posts.json"][1]
    assert second_listing - first_429 >= RETRY_AFTER - 0.5  # it did wait, politely, in one piece
    # Sweeps ran while the job had been silent on the site for longer than the lost threshold ...
    assert any(first_429 + LOST_AFTER + 0.5 < moment < second_listing for moment in sweeps)
    # ... and found it alive because its watcher kept beating meanwhile.
    assert len(beats) >= RETRY_AFTER
    assert (job.status, job.accepted, job.attempts) == ("succeeded", 3, 1), job.error


def test_a_job_marked_lost_and_retried_stops_its_old_copy_and_refuses_its_writes(transactional_db, world, crawl_settings, character,
                                                           settings):
    world.posts = standard_posts(["ok"] * 3)
    world.listing_429 = 1
    world.retry_after = "20"
    settings.KYARA_CRAWL_MAX_RETRY_AFTER = 30
    settings.KYARA_JOB_POLL_SECONDS = 0.1
    job = crawl_job_create(source="danbooru", character=character, quota=3, queue=False)
    old_copy = {}

    def run_old_copy() -> None:
        try:
            old_copy["job"] = crawl_job_run(job_id=job.pk)
            old_copy["ended"] = time.monotonic()
        finally:
            connection.close()

    thread = threading.Thread(target=run_old_copy)
    thread.start()
    wait_for(lambda: world.hits["/posts.json"] >= 1, timeout=30, message="the old copy's first listing request")
    first_token = CrawlJob.objects.get(pk=job.pk).launch_token
    # Its machine is judged dead (say it froze past the threshold): the sweep marks it, a person retries.
    CrawlJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert jobs_mark_lost() == {"crawling.CrawlJob": [job.pk]}
    retried_at = time.monotonic()
    crawl_job_retry(job=job)
    thread.join(timeout=10)
    assert not thread.is_alive() and old_copy["ended"] - retried_at < 3  # it stopped; no 20 s wait
    assert CrawlJob.objects.get(pk=job.pk).status == "queued"  # its last words were refused
    assert world.hits["/posts.json"] == 1 and SeenPost.objects.count() == 0

    world.listing_429 = 0
    second = crawl_job_run(job_id=job.pk)
    assert (second.status, second.accepted, second.attempts) == ("succeeded", 3, 2), second.error
    assert second.launch_token != first_token
