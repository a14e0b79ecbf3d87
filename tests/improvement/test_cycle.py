"""A cycle end to end through real workers (the default and the training queue) against the fake booru on
127.0.0.1: plan → crawl P1, then P4 → auto-review → wait for a person → freeze → train (1 epoch, 32 px) →
evaluate → compare → promote; cancelled mid-crawl and resumed, waiting for a person then told to go on,
failing at the freeze (a name taken) and resumed without redoing what was done."""
from __future__ import annotations

from datetime import datetime

import pytest

from apps.characters.models import DatasetItem, DatasetVersion, Image
from apps.characters.services import image_approve
from apps.crawling.models import CrawlJob
from apps.evaluation.models import EvaluationRun
from apps.improvement.models import Cycle
from apps.improvement.services import cycles_advance_all
from apps.inference.models import AliasChange, ModelAlias
from tests.conftest import wait_for

from .conftest import TRAINING

pytestmark = [pytest.mark.queue, pytest.mark.slow, pytest.mark.backend]


def _cycle(cycle_id: int) -> Cycle:
    return Cycle.objects.get(pk=cycle_id)


def _stage(cycle: Cycle, name: str) -> dict:
    return cycle.stage_record(name)


def _at(cycle_id: int, stage: str, status: str) -> Cycle | None:
    cycle = _cycle(cycle_id)
    assert cycle.status != "failed", cycle.error
    return cycle if cycle.stage == stage and _stage(cycle, stage)["status"] == status else None


def _ended(cycle_id: int) -> Cycle | None:
    cycle = _cycle(cycle_id)
    return cycle if cycle.status in Cycle.FINISHED else None


def test_a_cycle_end_to_end_with_cancel_resume_a_person_and_a_failed_step(
        cycle_world, cycle_qcluster, world, staff_api_client):
    hu_tao = cycle_world["characters"][2]
    world.image_delay = 1.0  # a slow site: the first crawl is still running when the cycle is cancelled
    response = staff_api_client.post("/api/v1/cycles/", {
        "from_evaluation": cycle_world["evaluation"].pk, "characters": ["hu-tao", "char-0"],
        "sources": ["danbooru"], "auto_approve_min_confidence": 0.9, "epochs": 1, "image_size": 32,
        "config_overrides": {key: value for key, value in TRAINING.items() if key not in ("epochs", "image_size")},
        "promote_if_better": True, "margin": -1.0}, format="json")
    assert response.status_code == 201, response.json()
    cycle_id = response.json()["id"]

    # Plan: hu-tao (unknown to default: 0%) is P1, char-0 (always right) P4; P1's crawl starts alone.
    cycle = wait_for(lambda: (c := _at(cycle_id, "crawl", "running")) and c.plan["tiers"][0]["jobs"] and c,
                     timeout=60, message="the P1 crawl")
    tiers = cycle.plan["tiers"]
    assert [(t["tier"], t["targets"]) for t in tiers] == [(1, {"hu-tao": 100}), (4, {"char-0": 5})]
    assert tiers[1]["jobs"] == [] and len(tiers[0]["jobs"]) == 1
    p1_job = CrawlJob.objects.get(pk=tiers[0]["jobs"][0])
    wait_for(lambda: CrawlJob.objects.filter(pk=p1_job.pk, status="running", accepted__gte=1).exists(), timeout=60,
             message="the P1 crawl job to store an image")

    # Cancel mid-crawl: the crawl job is cancelled too; nothing planned is lost.
    response = staff_api_client.post(f"/api/v1/cycles/{cycle_id}/cancel/")
    assert response.status_code == 200, response.json()
    cycle = wait_for(lambda: _ended(cycle_id), timeout=30, message="the cancel")
    assert cycle.status == "cancelled" and _stage(cycle, "crawl")["status"] == "cancelled"
    assert _stage(cycle, "plan")["status"] == "succeeded" and cycle.plan["tiers"] == tiers
    wait_for(lambda: CrawlJob.objects.get(pk=p1_job.pk).status == "cancelled", timeout=30, message="crawl cancelled")

    # Resume: the same crawl job is retried (no new one), then P4's job starts only after P1's finished.
    world.image_delay = 0.0
    response = staff_api_client.post(f"/api/v1/cycles/{cycle_id}/resume/")
    assert response.status_code == 200 and response.json()["status"] == "queued", response.json()
    cycle = wait_for(lambda: _at(cycle_id, "wait", "waiting"), timeout=120, message="the wait for a person")
    p1_job.refresh_from_db()
    assert p1_job.status == "succeeded" and p1_job.attempts == 2 and p1_job.accepted > 0
    (p4_id,) = cycle.plan["tiers"][1]["jobs"]
    p4_job = CrawlJob.objects.get(pk=p4_id)
    assert p4_job.character.slug == "char-0" and p4_job.created_at >= p1_job.finished_at
    assert sorted(cycle.crawl_jobs.values_list("pk", flat=True)) == sorted([p1_job.pk, p4_id])
    review = _stage(cycle, "review")
    crawled = list(Image.objects.filter(character=hu_tao, source_kind="crawl").order_by("pk"))
    assert review["status"] == "succeeded" and len(crawled) == p1_job.accepted
    # Default cannot judge hu-tao (not one of its classes): every crawled image was suggested, none approved.
    assert review["detail"].startswith(f"{len(crawled)} image(s) given rigged-default's suggestions, 0 approved")
    assert _stage(cycle, "wait")["detail"] == f"{len(crawled)} crawled image(s) wait for review"
    detail = staff_api_client.get(f"/api/v1/cycles/{cycle_id}/").json()
    assert detail["waiting_images"] == len(crawled) and detail["stage"] == "wait"

    # A person reviews all but two; the schedule's advance sees two still wait and keeps waiting.
    image_approve(image_ids=[image.pk for image in crawled[:-2]])
    cycles_advance_all()
    wait_for(lambda: _stage(_cycle(cycle_id), "wait")["detail"] == "2 crawled image(s) wait for review",
             timeout=30, message="the wait to count two")
    # A dataset version already has the name the freeze will take: the freeze fails, nothing before is lost.
    blocker = DatasetVersion.objects.create(name=f"cycle-{cycle_id}", content_hash="0" * 64)
    response = staff_api_client.post(f"/api/v1/cycles/{cycle_id}/continue/")
    assert response.status_code == 200 and response.json()["skip_waiting"] is True
    cycle = wait_for(lambda: _ended(cycle_id), timeout=60, message="the freeze to fail")
    assert cycle.status == "failed" and cycle.stage == "freeze" and "already exists" in cycle.error
    assert _stage(cycle, "freeze")["status"] == "failed" and _stage(cycle, "wait")["status"] == "succeeded"
    assert "went on without waiting: 2 crawled image(s) still pending" in _stage(cycle, "wait")["detail"]

    blocker.name = "someone-elses"
    blocker.save()
    assert staff_api_client.post(f"/api/v1/cycles/{cycle_id}/resume/").status_code == 200
    cycle = wait_for(lambda: _ended(cycle_id), timeout=240, message="the cycle to finish")
    assert cycle.status == "succeeded", cycle.error
    assert [record["status"] for record in cycle.stages] == ["succeeded"] * 9
    assert CrawlJob.objects.count() == 2  # the crawls were not run again

    # The new version holds the approved crawled images and not the two left pending.
    version = cycle.dataset_version
    assert version.name == f"cycle-{cycle_id}"
    held = set(DatasetItem.objects.filter(version=version).values_list("image_id", flat=True))
    assert {image.pk for image in crawled[:-2]} <= held and not {image.pk for image in crawled[-2:]} & held

    # Trained with the cycle's settings, evaluated four ways, compared, promoted through model_alias_set.
    job = cycle.training_job
    assert job.status == "succeeded" and job.config["epochs"] == 1 and job.config["image_size"] == 32
    assert job.config["architecture"] == "simple" and job.dataset_version_id == version.pk
    runs = {name: getattr(cycle, name) for name in ("evaluation", "evaluation_previous", "baseline_evaluation",
                                                     "baseline_evaluation_previous")}
    assert all(run.status == EvaluationRun.Status.SUCCEEDED for run in runs.values())
    assert runs["evaluation"].model_version_id == job.model_version_id and runs["evaluation"].dataset_version == version
    assert runs["baseline_evaluation_previous"] == cycle_world["evaluation"]  # default on v0/test: reused
    assert runs["evaluation_previous"].origin == runs["baseline_evaluation"].origin == "cycle"  # the cycle's own
    assert cycle.baseline_model == cycle_world["default"]
    splits = cycle.comparison["splits"]
    assert [s["split"] for s in splits] == ["new", "previous"] and cycle.comparison["margin"] == -1.0
    assert cycle.comparison["better"] is True and cycle.promoted and cycle.hold_reason == ""
    assert ModelAlias.objects.get(name="default").version_id == job.model_version_id
    change = AliasChange.objects.filter(alias="default").first()
    assert change.to_version_id == job.model_version_id and f"improvement cycle {cycle_id}" in change.why

    # Each stage has its timings and links; the JSON names what the cycle made.
    data = staff_api_client.get(f"/api/v1/cycles/{cycle_id}/").json()
    for record in data["stages"]:
        assert datetime.fromisoformat(record["started_at"]) <= datetime.fromisoformat(record["finished_at"])
    crawl_links = [item for item in data["stages"][1]["links"] if item["kind"] == "crawl_job"]
    assert [item["url"] for item in crawl_links] == [f"/ui/crawls/{p1_job.pk}/", f"/ui/crawls/{p4_id}/"]
    assert (data["training_job"], data["dataset_version"], data["promoted"]) == (job.pk, version.pk, True)
    assert data["crawl_jobs"] == [p1_job.pk, p4_id] and data["evaluation"] == runs["evaluation"].pk
