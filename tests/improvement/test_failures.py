"""A step that crashes fails the cycle with the error and keeps what was done; a cycle nothing advances any more is
swept as lost; both resume from the stage that had not finished."""
from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from apps.core.jobs import jobs_mark_lost
from apps.crawling.models import CrawlJob
from apps.improvement.models import Cycle
from apps.improvement.services import cycle_advance, cycle_resume, initial_stages

DONE_BEFORE_FREEZE = ("plan", "crawl", "review", "wait")


def _at_freeze(world) -> Cycle:
    stages = [{**record, "status": "succeeded", "detail": f"{record['name']} done"}
              if record["name"] in DONE_BEFORE_FREEZE else record for record in initial_stages()]
    return Cycle.objects.create(from_evaluation=world["evaluation"], stage="freeze", stages=stages,
                                plan={"tiers": [{"tier": 1, "name": "P1", "status": "done", "jobs": [],
                                                 "targets": {"hu-tao": 100}}]})


def test_a_crashed_step_fails_the_cycle_with_its_error_and_resume_goes_on(cycle_world):
    v0 = cycle_world["v0"]
    good = dict(v0.params)
    v0.params = {**good, "val": "a fifth"}  # a hand-edited row the freeze cannot read
    v0.save()
    cycle = cycle_advance(cycle_id=_at_freeze(cycle_world).pk)
    assert cycle.status == "failed" and cycle.stop_reason == "error" and cycle.stage == "freeze"
    assert cycle.error.startswith("The freeze stage crashed: TypeError: ")
    freeze = cycle.stage_record("freeze")
    assert freeze["status"] == "failed" and freeze["detail"] == cycle.error and freeze["finished_at"]
    assert [cycle.stage_record(name)["detail"] for name in DONE_BEFORE_FREEZE] == [
        f"{name} done" for name in DONE_BEFORE_FREEZE]  # nothing done before is lost
    assert cycle.plan["tiers"][0]["targets"] == {"hu-tao": 100} and cycle.dataset_version is None

    v0.params = good
    v0.save()
    cycle = cycle_resume(cycle=cycle)
    assert (cycle.status, cycle.error, cycle.stage_record("freeze")["status"]) == ("queued", "", "pending")
    cycle = cycle_advance(cycle_id=cycle.pk)
    # Nothing new was approved since v0: the same images, so the cycle ends there, held, without training.
    assert cycle.status == "succeeded" and cycle.dataset_version.content_hash == v0.content_hash
    assert cycle.hold_reason == "Nothing changed since v0: no new approved image, so no new model."
    assert [cycle.stage_record(name)["status"] for name in ("freeze", "train", "promote")] == [
        "succeeded", "skipped", "skipped"]
    assert cycle.training_job is None and not cycle.promoted


def test_a_cycle_nothing_advances_is_swept_as_lost_and_resumes(cycle_world, settings):
    job = CrawlJob.objects.create(source="danbooru", character=cycle_world["characters"][2], quota=5)  # queued
    stages = [{**record, "status": "succeeded"} if record["name"] == "plan" else record for record in initial_stages()]
    cycle = Cycle.objects.create(from_evaluation=cycle_world["evaluation"], stage="crawl", stages=stages,
                                 plan={"tiers": [{"tier": 1, "name": "P1", "status": "running", "jobs": [job.pk],
                                                  "targets": {"hu-tao": 5}}]})
    cycle.crawl_jobs.add(job)
    cycle = cycle_advance(cycle_id=cycle.pk)  # claims it and waits for the crawl
    assert cycle.status == "running" and cycle.stage_record("crawl")["detail"].startswith("P1: 1 of 1 crawl job")
    assert cycle.pid is None and cycle.hostname == ""  # no process of its own: lost only by a silent heartbeat
    assert jobs_mark_lost() == {}
    stale = timezone.now() - timedelta(seconds=settings.KYARA_JOB_LOST_AFTER + 5)
    Cycle.objects.filter(pk=cycle.pk).update(heartbeat_at=stale)
    assert jobs_mark_lost() == {"improvement.Cycle": [cycle.pk]}
    cycle.refresh_from_db()
    assert cycle.status == "failed" and cycle.stop_reason == "lost" and "cycles: advance" in cycle.error
    cycle = cycle_resume(cycle=cycle)
    assert cycle.status == "queued" and cycle_advance(cycle_id=cycle.pk).status == "running"
    assert list(cycle.crawl_jobs.all()) == [job]  # the same crawl job waited for, none made again
