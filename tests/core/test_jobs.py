"""The one job lifecycle (apps.core.jobs): claim once, every write under the launch token, cancel, requeue,
the watcher's heartbeat, the one scheduled sweep, and no writes on GET."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.core.api import ServiceError
from apps.core.jobs import (
    CANCEL,
    RUN,
    STOP,
    SWEEP_SCHEDULE,
    SWEEP_TASK,
    JobWatcher,
    job_cancel,
    job_check,
    job_claim,
    job_finish,
    job_heartbeat,
    job_launch,
    job_requeue,
    jobs_mark_lost,
    process_alive,
)
from apps.crawling.models import CrawlJob
from tests.conftest import running_qcluster, wait_for

pytestmark = pytest.mark.backend

LONG_AGO = timedelta(hours=1)


def _crawl_job(**fields) -> CrawlJob:
    return CrawlJob.objects.create(source="danbooru", query="hu_tao", quota=3, **fields)


def _running(job: CrawlJob, *, beat_age: timedelta = timedelta(0), **fields) -> CrawlJob:
    """A job as a worker left it: running under a token, its last heartbeat ``beat_age`` ago."""
    beat = timezone.now() - beat_age
    CrawlJob.objects.filter(pk=job.pk).update(status="running", launch_token=f"token-{job.pk}", started_at=beat,
                                              heartbeat_at=beat, **fields)
    job.refresh_from_db()
    return job


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- claim ------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_job_is_claimed_once_and_the_claim_records_who_holds_it():
    job = _crawl_job()
    claimed = job_claim(CrawlJob, job.pk)
    assert claimed is not None and claimed.status == "running" and claimed.attempts == 1
    assert len(claimed.launch_token) == 32 and claimed.pid and claimed.hostname
    assert claimed.heartbeat_at and claimed.started_at and claimed.finished_at is None
    assert job_claim(CrawlJob, job.pk) is None  # a second delivery of the same task finds nothing
    assert CrawlJob.objects.get(pk=job.pk).launch_token == claimed.launch_token
    assert job_claim(CrawlJob, job.pk + 1000) is None


@pytest.mark.django_db
def test_a_launcher_reserves_a_job_once_and_only_its_process_claims_it():
    job = _crawl_job()
    token = job_launch(CrawlJob, job.pk)
    assert token and job_launch(CrawlJob, job.pk) is None
    assert job_claim(CrawlJob, job.pk, token="someone-else") is None
    assert CrawlJob.objects.get(pk=job.pk).status == "queued"
    claimed = job_claim(CrawlJob, job.pk, token=token)
    assert claimed is not None and claimed.launch_token == token


@pytest.mark.django_db
def test_a_job_cancelled_while_queued_is_never_claimed():
    job = _crawl_job()
    CrawlJob.objects.filter(pk=job.pk).update(cancel_requested=True)  # a cancel racing the claim
    assert job_claim(CrawlJob, job.pk) is None
    job.refresh_from_db()
    assert (job.status, job.stop_reason, job.attempts) == ("cancelled", "cancelled", 0) and job.finished_at


def test_claims_racing_on_many_threads_let_exactly_one_through(transactional_db):
    job = _crawl_job()
    start = threading.Barrier(6)
    won: list = []

    def claim() -> None:
        try:
            start.wait()
            won.append(job_claim(CrawlJob, job.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [claimed for claimed in won if claimed is not None]
    assert len(won) == 6 and len(winners) == 1
    job.refresh_from_db()
    assert job.attempts == 1 and job.launch_token == winners[0].launch_token


# --- writes under the token -------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_stale_process_cannot_write_after_a_retry_took_the_job_over():
    job = _crawl_job()
    stale = job_claim(CrawlJob, job.pk)
    assert job_heartbeat(stale, progress=0.2, accepted=1) and job_check(stale) == RUN
    CrawlJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - LONG_AGO)  # its machine froze
    assert job_requeue(stale, refused_code="not_retryable").status == "queued"  # the sweep's rule, then queued
    fresh = job_claim(CrawlJob, job.pk)
    assert fresh.attempts == 2 and fresh.launch_token != stale.launch_token

    # The old process wakes up: every write it tries is refused, and it is told to stop.
    assert job_check(stale) == STOP
    assert not job_heartbeat(stale, progress=0.9, accepted=99)
    assert not job_finish(stale, status="succeeded", stop_reason="quota")
    row = CrawlJob.objects.get(pk=job.pk)
    assert (row.status, row.accepted, row.progress, row.stop_reason) == ("running", 1, 0.2, "")
    assert job_finish(fresh, status="succeeded", stop_reason="quota", accepted=3)
    assert CrawlJob.objects.get(pk=job.pk).accepted == 3


@pytest.mark.django_db
def test_finishing_needs_the_token_and_a_final_status():
    job = job_claim(CrawlJob, _crawl_job().pk)
    with pytest.raises(ValueError):
        job_finish(job, status="running")
    tokenless = CrawlJob.objects.get(pk=job.pk)
    tokenless.launch_token = ""
    with pytest.raises(ValueError):
        job_heartbeat(tokenless)
    assert job_finish(job, status="failed", error="x" * 20_000) and len(job.error) == 10_000
    assert not job_finish(job, status="succeeded")  # finished already: nothing more to write
    assert CrawlJob.objects.get(pk=job.pk).status == "failed"


# --- cancel and requeue -----------------------------------------------------------------------------

@pytest.mark.django_db
def test_cancel_ends_a_queued_job_asks_a_running_one_and_refuses_a_finished_one():
    queued = job_cancel(_crawl_job())
    assert (queued.status, queued.cancel_requested, queued.stop_reason) == ("cancelled", True, "cancelled")
    running = job_claim(CrawlJob, _crawl_job().pk)
    assert job_cancel(running).status == "running" and job_check(running) == CANCEL
    with pytest.raises(ServiceError) as info:
        job_cancel(queued, refused_code="not_active")
    assert info.value.code == "not_active" and info.value.status_code == 409


@pytest.mark.django_db
def test_requeue_refuses_a_live_running_job_and_resets_a_failed_one():
    live = job_claim(CrawlJob, _crawl_job().pk)
    with pytest.raises(ServiceError, match="only failed or cancelled") as info:
        job_requeue(live, refused_code="not_retryable")
    assert info.value.code == "not_retryable" and CrawlJob.objects.get(pk=live.pk).status == "running"
    assert job_finish(live, status="failed", error="boom", stop_reason="error")
    again = job_requeue(live, refused_code="not_retryable", task_id="")
    assert (again.status, again.error, again.stop_reason, again.launch_token, again.finished_at) == (
        "queued", "", "", "", None)
    checked = []

    def no_checkpoint(job):
        checked.append(job.pk)
        raise ServiceError("no_checkpoint", "nothing to resume from")

    cancelled = job_cancel(_crawl_job())
    with pytest.raises(ServiceError, match="nothing to resume from"):
        job_requeue(cancelled, refused_code="not_resumable", check=no_checkpoint)
    assert checked == [cancelled.pk] and CrawlJob.objects.get(pk=cancelled.pk).status == "cancelled"


# --- the watcher ------------------------------------------------------------------------------------

def test_the_watcher_beats_while_the_work_is_silent_and_stops_on_cancel(transactional_db):
    job = job_claim(CrawlJob, _crawl_job().pk)
    claimed_beat = job.heartbeat_at
    with JobWatcher(job, poll=0.05, heartbeat=0.1) as watcher:
        watcher.progress = 0.5
        time.sleep(0.6)  # the work says nothing, as while it waits out a Retry-After
        row = CrawlJob.objects.get(pk=job.pk)
        assert row.heartbeat_at > claimed_beat and row.progress == 0.5 and not watcher.stop.is_set()
        job_cancel(job)
        assert watcher.stop.wait(2) and watcher.cancelled and not watcher.taken_over


def test_the_watcher_stops_the_work_once_another_process_holds_the_job(transactional_db):
    job = job_claim(CrawlJob, _crawl_job().pk)
    with JobWatcher(job, poll=0.05, heartbeat=0.1) as watcher:
        CrawlJob.objects.filter(pk=job.pk).update(launch_token="another-process")
        assert watcher.stop.wait(2) and watcher.taken_over and not watcher.cancelled
        watcher.join(2)
        assert not watcher.is_alive()  # it stops beating: the row is not its to write


# --- the sweep ----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_sweep_marks_only_dead_jobs(settings):
    settings.KYARA_JOB_LOST_AFTER = 60
    alive = _running(_crawl_job(), beat_age=timedelta(seconds=5))
    silent = _running(_crawl_job(), beat_age=timedelta(seconds=120))
    never_beat = _running(_crawl_job())
    CrawlJob.objects.filter(pk=never_beat.pk).update(heartbeat_at=None, started_at=timezone.now() - LONG_AGO)
    gone = _running(_crawl_job(), beat_age=timedelta(seconds=5), pid=_dead_pid(), hostname=socket.gethostname())
    elsewhere = _running(_crawl_job(), beat_age=timedelta(seconds=5), pid=_dead_pid(), hostname="another-host")
    queued_long_ago = _crawl_job()
    CrawlJob.objects.filter(pk=queued_long_ago.pk).update(updated_at=timezone.now() - LONG_AGO)
    finished = _running(_crawl_job(), beat_age=LONG_AGO)
    CrawlJob.objects.filter(pk=finished.pk).update(status="succeeded")

    lost = jobs_mark_lost()
    assert sorted(lost["crawling.CrawlJob"]) == sorted([silent.pk, never_beat.pk, gone.pk]) and len(lost) == 1
    states = dict(CrawlJob.objects.values_list("pk", "status"))
    assert states[alive.pk] == states[elsewhere.pk] == "running"  # a pid on another host is not ours to judge
    assert states[queued_long_ago.pk] == "queued" and states[finished.pk] == "succeeded"
    silent.refresh_from_db()
    assert silent.stop_reason == "worker_lost" and "retry the job" in silent.error and silent.finished_at
    assert jobs_mark_lost() == {}  # nothing twice


@pytest.mark.django_db
def test_a_zombie_is_dead_to_the_sweep(settings):
    """A killed worker whose parent died too stays a zombie until an init reaps it (in a container, maybe never):
    signal 0 still reaches it, yet it will never beat again."""
    settings.KYARA_JOB_LOST_AFTER = 600
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # never waited for: a zombie once it exits
    try:
        wait_for(lambda: Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                 timeout=30, message="the child to exit")
        assert not process_alive(child.pid)
        zombie = _running(_crawl_job(), beat_age=timedelta(seconds=1), pid=child.pid, hostname=socket.gethostname())
        assert jobs_mark_lost() == {"crawling.CrawlJob": [zombie.pk]}
    finally:
        child.wait()
    assert process_alive(os.getpid())


@pytest.mark.django_db
def test_the_sweep_command_and_the_training_watchdog(settings):
    settings.KYARA_JOB_LOST_AFTER = 60
    dead = _running(_crawl_job(), beat_age=LONG_AGO)
    out = io.StringIO()
    call_command("training_watchdog", stdout=out)
    assert out.getvalue().strip() == "0 lost job(s)" and CrawlJob.objects.get(pk=dead.pk).status == "running"
    call_command("sweep_jobs", stdout=out)
    assert f"1 lost job(s): crawling.CrawlJob {dead.pk}" in out.getvalue()


def test_one_sweep_schedule_made_idempotently_and_run_by_a_real_worker(transactional_db, settings):
    from django_q.brokers import get_broker
    from django_q.models import Schedule
    from django_q.scheduler import scheduler

    # migrate made it (post_migrate); migrating again or the command does not make a second one.
    assert list(Schedule.objects.filter(func=SWEEP_TASK).values_list("name", "schedule_type", "minutes")) == [
        (SWEEP_SCHEDULE, Schedule.MINUTES, 1)]
    call_command("migrate", verbosity=0)
    call_command("sweep_jobs", "--schedule", stdout=io.StringIO())
    assert Schedule.objects.filter(func=SWEEP_TASK).count() == 1
    assert not Schedule.objects.filter(name="training: detect lost jobs").exists()  # the old one is gone

    dead = _running(_crawl_job(), beat_age=LONG_AGO)
    alive = _running(_crawl_job())
    Schedule.objects.filter(name=SWEEP_SCHEDULE).update(next_run=timezone.now() - timedelta(seconds=1))
    with running_qcluster("qcluster-sweep.log"):
        scheduler(broker=get_broker())  # what the cluster's guard does every 30 s: queue what is due
        wait_for(lambda: CrawlJob.objects.get(pk=dead.pk).status == "failed", timeout=60, message="the sweep")
    assert CrawlJob.objects.get(pk=alive.pk).status == "running"
    assert Schedule.objects.get(name=SWEEP_SCHEDULE).next_run > timezone.now()

    settings.KYARA_JOB_SWEEP_MINUTES = 0
    call_command("sweep_jobs", "--schedule", stdout=io.StringIO())
    assert not Schedule.objects.filter(name=SWEEP_SCHEDULE).exists()


# --- no GET writes ----------------------------------------------------------------------------------

def _writes(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")]


@pytest.mark.django_db
def test_a_get_of_list_pages_and_apis_writes_nothing(client, api_client, staff_user):
    from apps.characters.models import DatasetVersion
    from apps.evaluation.models import EvaluationRun
    from apps.inference.models import ModelVersion
    from apps.training.models import TrainingJob

    version = DatasetVersion.objects.create(name="v1", content_hash="0" * 64)
    model = ModelVersion.objects.create(name="m1", architecture="simple", artifact="models/m1.pt",
                                        artifact_sha256="0" * 64, dataset_version=version)
    old = timezone.now() - LONG_AGO
    dead = {"status": "running", "launch_token": "t", "started_at": old, "heartbeat_at": old}
    crawl = _crawl_job()
    CrawlJob.objects.filter(pk=crawl.pk).update(**dead)
    training = TrainingJob.objects.create(dataset_version=version, name="t1", **dead)
    run = EvaluationRun.objects.create(model_version=model, dataset_version=version, **dead)

    client.force_login(staff_user)  # the login writes; what follows must not
    paths = [("api", "/api/v1/crawl-jobs/"), ("api", "/api/v1/training-jobs/"), ("api", "/api/v1/evaluations/"),
             ("api", f"/api/v1/crawl-jobs/{crawl.pk}/"), ("api", f"/api/v1/training-jobs/{training.pk}/"),
             ("api", f"/api/v1/evaluations/{run.pk}/"), ("page", "/ui/crawls/"), ("page", "/ui/training/"),
             ("page", "/ui/evaluations/"), ("page", f"/ui/crawls/{crawl.pk}/"), ("page", f"/ui/training/{training.pk}/"),
             ("page", f"/ui/evaluations/{run.pk}/"), ("page", "/")]
    for kind, path in paths:
        with CaptureQueriesContext(connection) as queries:
            response = (api_client if kind == "api" else client).get(path)
        assert response.status_code == 200, (path, response.status_code)
        assert _writes(queries.captured_queries) == [], path
    # Dead as they are, they stay "running" until the scheduled sweep runs.
    assert {CrawlJob.objects.get().status, TrainingJob.objects.get().status, EvaluationRun.objects.get().status} == {
        "running"}
    assert jobs_mark_lost() == {"crawling.CrawlJob": [crawl.pk], "training.TrainingJob": [training.pk],
                                "evaluation.EvaluationRun": [run.pk]}
