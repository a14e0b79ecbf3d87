"""SIGKILL the qcluster worker mid-crawl and the whole qcluster mid-ingest (real processes, a real local site and
folder): the sweep (``jobs_mark_lost``) marks the job lost, a retry finishes it, and every stored image then has its
file with the right sha256, every post once, nothing stray left in the media folder."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from apps.characters.models import Image
from apps.core.jobs import jobs_mark_lost, process_alive
from apps.crawling.models import CrawlJob
from tests.conftest import ROOT, child_env, make_image_bytes, running_qcluster, stop_process, wait_for
from tests.crawling.conftest import crawl_worker_env, standard_posts
from tests.faults import assert_nothing_half_written, sigkill

pytestmark = [pytest.mark.queue, pytest.mark.slow, pytest.mark.backend]


def finished(job_id: int) -> CrawlJob | None:
    job = CrawlJob.objects.get(pk=job_id)
    return job if job.status in CrawlJob.FINISHED else None


def running_with(job_id: int, images: int) -> CrawlJob | None:
    job = CrawlJob.objects.get(pk=job_id)
    assert job.status in CrawlJob.ACTIVE, f"the job ended before the kill: {job.status} {job.error}"
    return job if job.status == "running" and job.pid and Image.objects.count() >= images else None


def retry_and_finish(client, job_id: int) -> CrawlJob:
    response = client.post(f"/api/v1/crawl-jobs/{job_id}/retry/")
    assert response.status_code == 200, response.content
    job = wait_for(lambda: finished(job_id), timeout=180, message="the retried job to finish")
    assert job.status == "succeeded", (job.stop_reason, job.error)
    return job


def assert_lost(job_id: int, killed_pid: int) -> None:
    """The sweep marks exactly this job, once; the job says what to do."""
    assert not process_alive(killed_pid)
    assert jobs_mark_lost() == {"crawling.CrawlJob": [job_id]}
    job = CrawlJob.objects.get(pk=job_id)
    assert (job.status, job.stop_reason) == ("failed", "worker_lost") and "retry the job" in job.error
    assert jobs_mark_lost() == {}


def assert_all_stored_once(expected_shas: set[str], media_root: Path) -> None:
    from io import StringIO

    from django.core.management import call_command

    state = assert_nothing_half_written()
    assert state.orphans == []  # a file whose row the kill prevented was adopted by the retry
    assert set(Image.objects.values_list("sha256", flat=True)) == expected_shas and state.rows == len(expected_shas)
    out = StringIO()
    call_command("check_media", "--json", "--repair", "--grace", "0", stdout=out)  # exit 0: nothing unresolved
    report = json.loads(out.getvalue())
    assert report["problems"] == [] and all(s["kind"] == "temporary" for s in report["strays"])
    assert assert_nothing_half_written().temporary == []


def test_sigkill_of_the_worker_mid_crawl(crawl_qcluster, staff_api_client, character, world, media_root):
    world.posts = standard_posts(["ok"] * 24)
    world.image_delay = 0.25  # downloads in flight at any moment
    job_id = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "character": "hu-tao", "quota": 100},
                                   format="json").json()["id"]
    job = wait_for(lambda: running_with(job_id, 4), timeout=90, message="the crawl to store a few images")
    assert job.pid != crawl_qcluster.pid  # the worker process that runs the task, not the cluster
    sigkill(job.pid)
    before = assert_nothing_half_written()
    assert before.rows < 24
    assert_lost(job_id, job.pid)

    # The cluster started a new worker; the retry runs there.
    job = retry_and_finish(staff_api_client, job_id)
    assert job.attempts == 2
    assert_all_stored_once({hashlib.sha256(world.image(post)).hexdigest() for post in world.posts}, media_root)
    assert set(Image.objects.values_list("source_post_id", flat=True)) == {str(p.id) for p in world.posts}
    print(f"\nkilled with {before.rows} of 24 stored ({len(before.orphans)} orphan files, {len(before.temporary)} "
          f"temporary); after the retry: 24 stored once")


@contextlib.contextmanager
def qcluster_in_its_own_session(env: dict[str, str], log_name: str):
    """A qcluster whose processes (sentinel, pusher, monitor, workers) share a process group of their own, so
    one signal ends them all at once, as if the machine had died."""
    log = open(Path(os.environ.get("KYARA_DATA_DIR", ROOT / "var" / "test")) / log_name, "w")
    proc = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=child_env(**env), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()


def test_sigkill_of_the_whole_cluster_mid_ingest(transactional_db, staff_api_client, world, tmp_path, media_root):
    local_root = tmp_path / "incoming"
    folder = local_root / "batch"
    folder.mkdir(parents=True)
    pictures = [make_image_bytes(700 + i, size=(1024, 1024)) for i in range(40)]  # each ingest takes a while
    for i, data in enumerate(pictures):
        (folder / f"{i:03d}.png").write_bytes(data)
    env = crawl_worker_env(world, local_root)
    with qcluster_in_its_own_session(env, "qcluster-fault-ingest.log") as cluster:
        job_id = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "local_folder", "query": "batch",
                                                                "quota": 1000}, format="json").json()["id"]
        job = wait_for(lambda: running_with(job_id, 5), timeout=120, message="the ingest to store a few images")
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(timeout=10)
        wait_for(lambda: not process_alive(job.pid), timeout=10, message="the worker to be gone")
    before = assert_nothing_half_written()
    assert before.rows < 40
    assert_lost(job_id, job.pid)

    proc = None
    try:
        with running_qcluster("qcluster-fault-ingest-2.log", **env) as proc:
            retry_and_finish(staff_api_client, job_id)
    finally:
        if proc is not None and proc.poll() is None:
            stop_process(proc)
    assert_all_stored_once({hashlib.sha256(data).hexdigest() for data in pictures}, media_root)
    print(f"\nkilled with {before.rows} of 40 stored ({len(before.orphans)} orphan files, {len(before.temporary)} "
          f"temporary); after the retry: 40 stored once")
