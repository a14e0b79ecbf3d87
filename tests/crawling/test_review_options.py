"""The new job options, ``solo`` and ``auto_approve_min_confidence``, and ``evaluation_run_id``: the migration,
the API, the commands, collection plans (from the crawling API and from an evaluation) and the admin."""
from __future__ import annotations

import io
import json
import math

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor

from apps.core.api import ServiceError
from apps.crawling.models import CrawlJob
from apps.crawling.services import auto_approve_validate, collection_plan_create

pytestmark = pytest.mark.django_db

OUT_OF_RANGE = [0, -0.5, 1.0001, 2]


@pytest.mark.backend
@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_jobs_the_defaults_and_guards_the_threshold():
    before = [("crawling", "0002_job_lifecycle")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old_job = executor.loader.project_state(before).apps.get_model("crawling", "CrawlJob")
    created = old_job.objects.create(source="danbooru", query="hu_tao", quota=3)

    executor = MigrationExecutor(connection)  # the graph as it is now
    executor.migrate(executor.loader.graph.leaf_nodes())
    job = CrawlJob.objects.get(pk=created.pk)
    assert (job.solo, job.auto_approve_min_confidence, job.evaluation_run_id, job.steps) == (None, None, None, [])
    CrawlJob.objects.filter(pk=job.pk).update(auto_approve_min_confidence=1.0)
    with pytest.raises(IntegrityError):
        CrawlJob.objects.filter(pk=job.pk).update(auto_approve_min_confidence=1.5)


def test_the_threshold_is_a_probability_above_zero():
    assert auto_approve_validate(None) is None and auto_approve_validate(1) == 1.0 and auto_approve_validate(0.05) == 0.05
    for bad in [*OUT_OF_RANGE, math.nan, math.inf, True, "0.9"]:
        with pytest.raises(ServiceError) as info:
            auto_approve_validate(bad)
        assert info.value.code == "invalid_auto_approve" and "above 0 and at most 1" in info.value.message


# --- the API ------------------------------------------------------------------------------------------

def test_the_api_takes_solo_and_the_auto_review_threshold(staff_api_client, crawl_settings, character):
    response = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "character": "hu-tao", "quota": 4,
                                                              "solo": True, "auto_approve_min_confidence": 0.9},
                                     format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["solo"], body["auto_approve_min_confidence"], body["evaluation_run_id"]) == (True, 0.9, None)
    assert [step["name"] for step in body["steps"]][-1] == "suggest" and "solo" in str(body["steps"])
    plain = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "character": "hu-tao", "quota": 4},
                                  format="json").json()
    assert (plain["solo"], plain["auto_approve_min_confidence"]) == (None, None)


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_the_api_refuses_a_threshold_outside_0_to_1_and_says_so(staff_api_client, crawl_settings, character, value):
    response = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "character": "hu-tao", "quota": 4,
                                                              "auto_approve_min_confidence": value}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_auto_approve"
    assert "auto_approve_min_confidence must be above 0 and at most 1" in error["message"] and repr(value) in error[
        "message"]
    plan = staff_api_client.post("/api/v1/crawl-jobs/plan/", {"targets": [{"character": "hu-tao", "wanted": 4}],
                                                              "auto_approve_min_confidence": value}, format="json")
    assert plan.status_code == 400 and plan.json()["error"]["code"] == "invalid_auto_approve"
    assert not CrawlJob.objects.exists()


def test_the_api_refuses_what_is_not_a_number_or_a_yes_no(staff_api_client, crawl_settings, character):
    for field, value in [("auto_approve_min_confidence", "high"), ("solo", "maybe")]:
        response = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "character": "hu-tao",
                                                                  "quota": 4, field: value}, format="json")
        assert response.status_code == 400 and field in response.json()["error"]["message"]
    assert not CrawlJob.objects.exists()


def test_a_plan_asks_for_solo_posts_unless_told_otherwise(staff_api_client, crawl_settings, character):
    response = staff_api_client.post("/api/v1/crawl-jobs/plan/", {"targets": [{"character": "hu-tao", "wanted": 4}],
                                                                  "auto_approve_min_confidence": 0.75}, format="json")
    assert response.status_code == 201
    assert {(j["solo"], j["auto_approve_min_confidence"]) for j in response.json()} == {(True, 0.75)}
    assert all("solo" in [s["name"] for s in j["steps"]] for j in response.json())
    anything = collection_plan_create(targets=[(character, 4)], solo=False)
    assert {job.solo for job in anything} == {False} and {job.auto_approve_min_confidence for job in anything} == {None}


# --- commands ----------------------------------------------------------------------------------------

def test_the_crawl_command_takes_solo_and_auto_approve(world, crawl_settings, character):
    out = io.StringIO()
    call_command("crawl", "--source", "safebooru", "--character", "hu-tao", "--quota", "2", "--solo",
                 "--auto-approve", "0.9", "--sync", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["solo"], summary["auto_approve_min_confidence"], summary["accepted"]) == (True, 0.9, 2)
    assert "solo" in summary["steps"] and summary["steps"][-1] == "suggest"
    with pytest.raises(CommandError, match="invalid_auto_approve: auto_approve_min_confidence must be above 0"):
        call_command("crawl", "--source", "safebooru", "--character", "hu-tao", "--quota", "2", "--auto-approve", "2")


@pytest.fixture
def evaluation_run(settings, character):
    """A succeeded evaluation whose model never answers hu-tao: hu-tao lands in the first tier (100 images)."""
    from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
    from tests.evaluation.conftest import make_characters, make_version, register_rigged

    settings.KYARA_INFERENCE_BACKEND = "torch"
    settings.KYARA_ALIAS_WATCH_SECONDS = 0
    settings.KYARA_EVAL_LATENCY_IMAGES = 2
    characters = [character, *make_characters(["other"])]
    version = make_version("v-plan", characters, train=1, val=1, test=3)
    model = register_rigged("rigged", [c.slug for c in characters], [0.0, 3.0], dataset_version=version)
    created = evaluation_run_create(model_version=model, dataset_version=version, queue=False)
    return evaluation_run_execute(run_id=created.pk)


def test_plans_from_an_evaluation_pass_the_options_through_and_record_the_run(evaluation_run, crawl_settings,
                                                                              staff_api_client):
    run = evaluation_run
    call_command("plan_collection", "--evaluation", str(run.pk), "--create-jobs", "--auto-approve", "0.85",
                 stdout=io.StringIO())
    jobs = list(CrawlJob.objects.order_by("pk"))
    assert sorted((j.source, j.quota) for j in jobs) == [("safebooru", 50), ("safebooru_donmai", 50)]
    assert {(j.solo, j.auto_approve_min_confidence, j.evaluation_run_id, j.origin) for j in jobs} == {
        (True, 0.85, run.pk, "plan")}
    call_command("plan_collection", "--evaluation", str(run.pk), "--create-jobs", "--no-solo", stdout=io.StringIO())
    assert {(j.solo, j.auto_approve_min_confidence) for j in CrawlJob.objects.exclude(pk__in=[j.pk for j in jobs])} == {
        (False, None)}
    with pytest.raises(CommandError, match="must be above 0 and at most 1"):
        call_command("plan_collection", "--evaluation", str(run.pk), "--create-jobs", "--auto-approve", "0")

    before = CrawlJob.objects.count()
    refused = staff_api_client.post(f"/api/v1/evaluations/{run.pk}/plan/", {"auto_approve_min_confidence": 1.5},
                                    format="json")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_auto_approve"
    assert CrawlJob.objects.count() == before
    created = staff_api_client.post(f"/api/v1/evaluations/{run.pk}/plan/", {"auto_approve_min_confidence": 0.6},
                                    format="json")
    assert created.status_code == 201
    ids = [job["id"] for job in created.json()["jobs"]]
    assert {(j.solo, j.auto_approve_min_confidence, j.evaluation_run_id) for j in CrawlJob.objects.filter(pk__in=ids)
            } == {(True, 0.6, run.pk)}
    plan = staff_api_client.get(f"/api/v1/evaluations/{run.pk}/plan/")  # reading the plan takes no job options
    assert plan.status_code == 200 and plan.json()[0]["character"] == "hu-tao"


# --- admin ---------------------------------------------------------------------------------------------

@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.invalid", "pw"))
    return client


def test_the_admin_sets_the_options_and_shows_the_steps(admin_client, crawl_settings, character):
    form = {"source": "safebooru", "character": character.pk, "query": "", "quota": 4, "solo": "true",
            "auto_approve_min_confidence": "1.5"}
    refused = admin_client.post("/admin/crawling/crawljob/add/", form)
    assert refused.status_code == 200 and b"must be above 0 and at most 1" in refused.content
    assert admin_client.post("/admin/crawling/crawljob/add/", {**form, "auto_approve_min_confidence": "0.9"}
                             ).status_code == 302
    job = CrawlJob.objects.get()
    assert (job.origin, job.solo, job.auto_approve_min_confidence) == ("admin", True, 0.9)
    page = admin_client.get(f"/admin/crawling/crawljob/{job.pk}/change/").content.decode()
    assert "<ol><li><code>known</code> (listing)" in page and "posts not tagged solo are refused" in page
    assert "approved when it confirms the label at ≥ 0.9" in page



def test_the_sources_list_says_which_steps_and_solo_tag_each_source_has(api_client, crawl_settings):
    rows = {row["name"]: row for row in api_client.get("/api/v1/crawl-sources/").json()}
    assert (rows["danbooru"]["solo_tag"], rows["safebooru"]["solo_tag"], rows["waifu_pics"]["solo_tag"]) == (
        "solo", "solo", "")
    assert rows["danbooru"]["solo_default"] is False
    assert rows["danbooru"]["steps"][0] == "known" and "solo" in rows["url_list"]["steps"]
