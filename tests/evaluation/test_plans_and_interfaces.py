"""Collection plans become crawl jobs; the command, the API and the admin drive the same services."""
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.crawling.models import CrawlJob
from apps.evaluation import services
from apps.evaluation.models import EvaluationRun
from apps.inference.services import model_alias_set

from .conftest import make_characters, make_version, register_rigged

pytestmark = pytest.mark.django_db

LABELS = ["char-0", "char-1", "ghost"]


@pytest.fixture
def tagged_characters(db):
    """char-1 is known to both default plan sources, char-2 only to safebooru.org, char-0 to none."""
    chars = make_characters(["char-0", "char-1", "char-2"])
    chars[1].booru_tags = {"danbooru": "char_one", "gelbooru": "char_one_(series)"}
    chars[2].booru_tags = {"safebooru": "char_two"}
    for character in chars[1:]:
        character.save(update_fields=["booru_tags"])
    return chars


@pytest.fixture
def run(tagged_characters, settings):
    settings.KYARA_CRAWL_PLAN_SOURCES = ["safebooru", "safebooru_donmai"]
    version = make_version("v-plan", tagged_characters)
    model = register_rigged("rigged", LABELS, [2.0, 1.0, 0.0], dataset_version=version)
    created = services.evaluation_run_create(model_version=model, dataset_version=version, queue=False)
    return services.evaluation_run_execute(run_id=created.pk)


def test_plan_lists_tier_target_and_sources_then_creates_the_right_crawl_jobs(run):
    out = StringIO()
    call_command("plan_collection", "--evaluation", str(run.pk), "--json", stdout=out)
    plan = json.loads(out.getvalue())
    assert plan["jobs"] == [] and not CrawlJob.objects.exists()  # listing creates nothing
    rows = {row["character"]: row for row in plan["plan"]}
    assert set(rows) == {"char-1", "char-2"}  # char-0 is at 100%: no tier; ghost has no support
    assert (rows["char-1"]["tier"], rows["char-1"]["target"], rows["char-1"]["sources"]) == (
        1, 100, ["safebooru", "safebooru_donmai"])
    assert (rows["char-2"]["tier"], rows["char-2"]["target"], rows["char-2"]["sources"]) == (1, 100, ["safebooru"])

    out = StringIO()
    call_command("plan_collection", "--evaluation", str(run.pk), "--create-jobs", stdout=out)
    jobs = sorted(CrawlJob.objects.values_list("character__slug", "source", "quota", "query", "origin"))
    assert jobs == [("char-1", "safebooru", 50, "char_one_(series)", "plan"),
                    ("char-1", "safebooru_donmai", 50, "char_one", "plan"),
                    ("char-2", "safebooru", 100, "char_two", "plan")]
    text = out.getvalue()
    assert "char-1" in text and "P1" in text and "safebooru, safebooru_donmai" in text
    assert "3 crawl job(s) created" in text
    run.refresh_from_db()
    assert run.plan["targets"] == {"char-1": 100, "char-2": 100} and len(run.plan["jobs"]) == 3


def test_plan_with_named_sources_and_low_support(run, settings):
    from apps.evaluation.models import CharacterResult

    CharacterResult.objects.filter(run=run, label="char-2").update(tier=None, tier_name="", low_support=True)
    jobs = services.evaluation_plan_create(run=run, sources=["safebooru"])
    assert sorted((j.character.slug, j.quota) for j in jobs) == [("char-1", 100)]
    more = services.evaluation_plan_create(run=run, sources=["safebooru"], include_low_support=True)
    assert sorted((j.character.slug, j.quota) for j in more) == [("char-1", 100), ("char-2", 100)]


def test_plan_refuses_a_failed_run(run):
    from apps.core.api import ServiceError

    EvaluationRun.objects.filter(pk=run.pk).update(status=EvaluationRun.Status.FAILED)
    run.refresh_from_db()
    with pytest.raises(ServiceError, match="plan from a succeeded run"):
        services.evaluation_plan_create(run=run)
    with pytest.raises(CommandError, match="No evaluation run"):
        call_command("plan_collection", "--evaluation", "999999")


# --- manage.py evaluate ------------------------------------------------------------------------------

def test_evaluate_command_json(three_characters, settings):
    version = make_version("v-cmd", three_characters)
    model = register_rigged("cmd-model", LABELS, [2.0, 1.0, 0.0], dataset_version=version)
    model_alias_set(name="candidate", version=model)
    out = StringIO()
    call_command("evaluate", "--model", "candidate", "--dataset-version", "v-cmd", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert list(data)[:3] == ["id", "leak_warning", "leak_report"]  # the leak check comes first
    assert data["leak_warning"] is None and data["status"] == "succeeded" and data["model_version_name"] == "cmd-model"
    assert data["top1"] == pytest.approx(1 / 3) and data["top5"] == pytest.approx(2 / 3)
    assert {"mean_per_class_accuracy", "macro_f1", "ece", "suggested_threshold", "latency_p50_ms"} <= set(data)
    rows = {row["character"]: row for row in data["per_character"]}
    assert {"character", "support", "accuracy", "tier"} <= set(rows["char-1"])
    assert (rows["char-1"]["support"], rows["char-1"]["accuracy"], rows["char-1"]["tier"]) == (4, 0.0, 1)
    assert rows["char-0"]["tier"] is None and rows["ghost"]["support"] == 0

    out = StringIO()
    call_command("evaluate", "--model", "cmd-model", "--dataset-version", "v-cmd", "--split", "val", stdout=out)
    text = out.getvalue()
    assert text.startswith("leak check: clean against v-cmd/train") and "top-1  33.3%" in text
    with pytest.raises(CommandError, match="No alias or model version"):
        call_command("evaluate", "--model", "nope", "--dataset-version", "v-cmd")
    with pytest.raises(CommandError, match="No dataset version"):
        call_command("evaluate", "--model", "cmd-model", "--dataset-version", "nope")


def test_evaluate_command_shows_a_leak_first(three_characters):
    from apps.characters.models import DatasetItem

    version = make_version("v-a", three_characters, test=1)
    register_rigged("leaky", LABELS, [2.0, 1.0, 0.0], dataset_version=version)
    trained = DatasetItem.objects.filter(version=version, split="train").select_related("image", "character").first()
    make_version("v-b", three_characters, train=1, val=0, test=1, seed_base=500,
                 extra=[(trained.image, trained.character, "test")])
    out = StringIO()
    call_command("evaluate", "--model", "leaky", "--dataset-version", "v-b", stdout=out)
    assert out.getvalue().startswith("LEAK CHECK: 1 of 4 images also in v-a/train (1 exact")


# --- API ---------------------------------------------------------------------------------------------

def test_api_list_detail_characters_compare_plan(run, api_client, staff_api_client):
    listing = api_client.get("/api/v1/evaluations/")
    assert listing.status_code == 200 and listing.json()["results"][0]["id"] == run.pk
    detail = api_client.get(f"/api/v1/evaluations/{run.pk}/").json()
    assert list(detail)[:3] == ["id", "leak_warning", "leak_report"]
    assert detail["top1"] == pytest.approx(1 / 3) and len(detail["per_character"]) == 4
    assert detail["labels"] == ["char-0", "char-1", "ghost", "char-2"] and len(detail["confusion_matrix"]) == 4
    rows = api_client.get(f"/api/v1/evaluations/{run.pk}/characters/").json()
    assert [r["character"] for r in rows][:2] == ["char-1", "char-2"]  # most urgent first
    compare = api_client.get(f"/api/v1/evaluations/{run.pk}/compare/?with={run.pk}").json()
    assert compare["counts"] == {"same": 3}
    assert api_client.get(f"/api/v1/evaluations/{run.pk}/compare/").status_code == 404
    history = api_client.get(f"/api/v1/evaluations/{run.pk}/history/").json()
    assert {row["character"] for row in history} == {"char-0", "char-1", "char-2"}
    plan = api_client.get(f"/api/v1/evaluations/{run.pk}/plan/").json()
    assert [(row["character"], row["target"]) for row in plan] == [("char-1", 100), ("char-2", 100)]
    assert api_client.post(f"/api/v1/evaluations/{run.pk}/plan/", {}, format="json").status_code in (401, 403)
    created = staff_api_client.post(f"/api/v1/evaluations/{run.pk}/plan/", {"sources": ["safebooru"]}, format="json")
    assert created.status_code == 201 and sorted(j["quota"] for j in created.json()["jobs"]) == [100, 100]


def test_api_create_is_staff_only_and_queues(run, api_client, staff_api_client, django_capture_on_commit_callbacks,
                                             monkeypatch):
    body = {"model_version": "rigged", "dataset_version": "v-plan", "split": "val"}
    assert api_client.post("/api/v1/evaluations/", body, format="json").status_code in (401, 403)
    queued = []
    monkeypatch.setattr(services, "enqueue", lambda *args, **kwargs: queued.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_api_client.post("/api/v1/evaluations/", body, format="json")
    assert response.status_code == 201 and response.json()["status"] == "queued"
    assert queued == [("apps.evaluation.tasks.run_evaluation", response.json()["id"])]
    bad = staff_api_client.post("/api/v1/evaluations/", {**body, "dataset_version": "nope"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"


def test_api_tier_rules(api_client, staff_api_client):
    rules = api_client.get("/api/v1/tier-rules/").json()
    assert [(r["priority"], r["images"], r["condition"]) for r in rules] == [
        (1, 100, "accuracy ≤ 0%"), (2, 80, "accuracy < 60%"), (3, 60, "accuracy < 80%")]
    assert api_client.patch(f"/api/v1/tier-rules/{rules[2]['id']}/", {"images": 70}, format="json").status_code in (
        401, 403)
    changed = staff_api_client.patch(f"/api/v1/tier-rules/{rules[2]['id']}/", {"images": 70}, format="json")
    assert changed.status_code == 200 and changed.json()["images"] == 70
    refused = staff_api_client.patch(f"/api/v1/tier-rules/{rules[2]['id']}/", {"max_accuracy": 3}, format="json")
    assert refused.status_code == 400


# --- admin -------------------------------------------------------------------------------------------

def test_admin_pages_and_actions(run, admin_client, monkeypatch):
    monkeypatch.setattr(services, "enqueue", lambda *args, **kwargs: None)
    page = admin_client.get(reverse("admin:evaluation_evaluationrun_change", args=[run.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.index("Leak check") < html.index("Metrics")
    assert admin_client.get(reverse("admin:evaluation_evaluationrun_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:evaluation_tierrule_changelist")).status_code == 200
    response = admin_client.post(reverse("admin:evaluation_evaluationrun_changelist"),
                                 {"action": "evaluate_again", "_selected_action": [run.pk]}, follow=True)
    assert response.status_code == 200 and EvaluationRun.objects.count() == 2
    again = EvaluationRun.objects.exclude(pk=run.pk).get()
    assert (again.origin, again.status, again.split) == ("admin", "queued", "test")
    admin_client.post(reverse("admin:evaluation_evaluationrun_changelist"),
                      {"action": "create_collection_plan", "_selected_action": [run.pk]}, follow=True)
    assert CrawlJob.objects.filter(origin="plan").count() == 3
    add = admin_client.post(reverse("admin:evaluation_evaluationrun_add"), {
        "model_version": run.model_version_id, "dataset_version": run.dataset_version_id, "split": "val"})
    assert add.status_code == 302 and EvaluationRun.objects.filter(split="val", origin="admin").exists()
    empty = make_version("v-empty-test", make_characters(["char-9"]), train=1, val=1, test=0, seed_base=800)
    refused = admin_client.post(reverse("admin:evaluation_evaluationrun_add"), {
        "model_version": run.model_version_id, "dataset_version": empty.pk, "split": "test"})
    assert refused.status_code == 200 and "has no test images" in refused.content.decode()
