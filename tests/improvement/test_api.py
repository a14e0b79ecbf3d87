"""Starting, reading and steering cycles without a worker: what is refused and why, the states each action
allows, the command's JSON and the schedules."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_q.models import Schedule

from apps.crawling.models import CrawlJob
from apps.evaluation.models import EvaluationRun
from apps.improvement.models import Cycle
from apps.improvement.services import (
    ADVANCE_SCHEDULE,
    WEEKLY_SCHEDULE,
    cycle_create,
    cycle_schedules,
    cycle_start_weekly,
)

from .conftest import queued


def _post(client, world, **fields):
    return client.post("/api/v1/cycles/", {"from_evaluation": world["evaluation"].pk, **fields}, format="json")


@pytest.mark.parametrize(("fields", "status", "code", "words"), [
    ({"characters": ["nobody"]}, 400, "unknown_character", "No character with the slug nobody"),
    ({"characters": ["char-0"], "sources": ["nowhere"]}, 400, "unknown_source", "Unknown source nowhere"),
    ({"margin": 2}, 400, "invalid", "margin"),
    ({"auto_approve_min_confidence": 1.5}, 400, "invalid", "auto_approve_min_confidence"),
    ({"config_overrides": {"architecture": "nope"}}, 400, "invalid_config", "unknown architecture 'nope'"),
    ({"characters": ["char-1"], "sources": ["danbooru"]}, 400, "nothing_to_collect",
     "no source has tags for char-1"),
])
def test_bad_input_is_refused_with_what_is_wrong_and_creates_nothing(cycle_world, staff_api_client, fields, status,
                                                                     code, words):
    queued()
    response = _post(staff_api_client, cycle_world, **fields)
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code and words in response.json()["error"]["message"]
    assert not Cycle.objects.exists() and queued() == []


def test_a_character_outside_the_plan_and_an_unfinished_evaluation_are_refused(cycle_world, staff_api_client):
    run = cycle_world["evaluation"]
    run.characters.filter(label="char-0").update(tier=None, provisional_tier=None, target=0)  # as with no P4 rule
    response = _post(staff_api_client, cycle_world, characters=["char-0"])
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_in_plan"
    assert "gives no collection target to char-0" in response.json()["error"]["message"]
    EvaluationRun.objects.filter(pk=run.pk).update(status="running")
    response = _post(staff_api_client, cycle_world)
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_evaluated"


def test_only_staff_start_and_steer_cycles_anyone_reads(cycle_world, api_client, django_user_model):
    cycle = cycle_create(from_evaluation=cycle_world["evaluation"], queue=False)
    assert _post(api_client, cycle_world).status_code in (401, 403)
    user = django_user_model.objects.create_user("reader", password="pw")
    api_client.force_authenticate(user)
    assert _post(api_client, cycle_world).status_code == 403
    for verb in ("cancel", "resume", "continue"):
        assert api_client.post(f"/api/v1/cycles/{cycle.pk}/{verb}/").status_code == 403
    listing = api_client.get("/api/v1/cycles/").json()
    assert [row["id"] for row in listing["results"]] == [cycle.pk]
    assert [stage["name"] for stage in listing["results"][0]["stages"]] == [
        "plan", "crawl", "review", "wait", "freeze", "train", "evaluate", "compare", "promote"]


@pytest.mark.backend
def test_a_started_cycle_is_queued_for_a_worker_and_each_action_says_when_it_does_not_apply(
        cycle_world, staff_api_client, django_capture_on_commit_callbacks):
    queued()
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(staff_api_client, cycle_world, characters=["hu-tao"], epochs=2, promote_if_better=True)
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["status"], data["stage"], data["characters"], data["epochs"], data["margin"]) == (
        "queued", "plan", ["hu-tao"], 2, 0.005)
    assert all(stage["status"] == "pending" for stage in data["stages"])
    assert [(task["func"], task["args"]) for task in queued()] == [("apps.improvement.tasks.advance_cycle",
                                                                     (data["id"],))]

    resumed = staff_api_client.post(f"/api/v1/cycles/{data['id']}/resume/")
    assert resumed.status_code == 409 and resumed.json()["error"]["code"] == "not_resumable"
    go_on = staff_api_client.post(f"/api/v1/cycles/{data['id']}/continue/")
    assert go_on.status_code == 200 and go_on.json()["skip_waiting"] is True
    cancelled = staff_api_client.post(f"/api/v1/cycles/{data['id']}/cancel/")  # queued: ends at once
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = staff_api_client.post(f"/api/v1/cycles/{data['id']}/cancel/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"
    late = staff_api_client.post(f"/api/v1/cycles/{data['id']}/continue/")
    assert late.status_code == 409 and late.json()["error"]["code"] == "not_waiting"


def test_improve_prints_the_cycle_as_json(cycle_world):
    out = StringIO()
    call_command("improve", "--evaluation", str(cycle_world["evaluation"].pk), "--characters", "hu-tao",
                 "--sources", "danbooru", "--auto-approve", "0.9", "--epochs", "3", "--image-size", "64",
                 "--set", "architecture=simple", "--promote-if-better", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert {"id", "status", "stages", "crawl_jobs", "dataset_version", "training_job", "evaluation", "comparison",
            "promoted"} <= set(data)
    cycle = Cycle.objects.get(pk=data["id"])
    assert (cycle.origin, cycle.sources, cycle.auto_approve_min_confidence, cycle.epochs, cycle.image_size) == (
        "cli", ["danbooru"], 0.9, 3, 64)
    assert cycle.config_overrides == {"architecture": "simple"} and cycle.promote_if_better
    assert data["status"] == "queued" and data["crawl_jobs"] == [] and data["promoted"] is False
    with pytest.raises(CommandError, match="unknown_character: No character with the slug ghost"):
        call_command("improve", "--evaluation", str(cycle_world["evaluation"].pk), "--characters", "ghost")


def test_improve_sync_runs_it_here_until_a_person_is_needed(transactional_db, cycle_world, crawl_settings, world):
    """No worker: --sync crawls (P1's hu-tao, then P4's char-0) and suggests here, and returns at the wait."""
    out = StringIO()
    call_command("improve", "--evaluation", str(cycle_world["evaluation"].pk), "--characters", "hu-tao", "char-0",
                 "--sources", "danbooru", "--sync", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert (data["status"], data["stage"]) == ("running", "wait")
    assert [stage["status"] for stage in data["stages"][:4]] == ["succeeded", "succeeded", "succeeded", "waiting"]
    jobs = CrawlJob.objects.filter(pk__in=data["crawl_jobs"]).order_by("pk")
    assert [(job.character.slug, job.status) for job in jobs] == [("hu-tao", "succeeded"), ("char-0", "succeeded")]
    assert {job.evaluation_run_id for job in jobs} == {cycle_world["evaluation"].pk}  # the review queue's plan filter
    assert data["waiting_images"] == jobs[0].accepted > 0
    assert data["stages"][3]["detail"] == f"{jobs[0].accepted} crawled image(s) wait for review"


def test_the_advance_schedule_is_kept_and_the_weekly_one_only_when_asked(cycle_world, settings):
    assert Schedule.objects.filter(name=ADVANCE_SCHEDULE, minutes=1).exists()  # post_migrate put it there
    assert not Schedule.objects.filter(name=WEEKLY_SCHEDULE).exists()
    settings.KYARA_CYCLE_WEEKLY = True
    settings.KYARA_CYCLE_ADVANCE_MINUTES = 0
    cycle_schedules()
    assert Schedule.objects.get(name=WEEKLY_SCHEDULE).schedule_type == Schedule.WEEKLY
    assert not Schedule.objects.filter(name=ADVANCE_SCHEDULE).exists()

    cycle = cycle_start_weekly()  # from default's latest test-split evaluation
    assert cycle.from_evaluation == cycle_world["evaluation"] and cycle.origin == "schedule"
    assert not cycle.promote_if_better
    assert cycle_start_weekly() is None  # one under way already
