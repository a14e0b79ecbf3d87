"""Evaluation runs on the serving path, checked by hand against rigged models (constant answers)."""
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from apps.characters.phash import to_unsigned
from apps.evaluation import selectors, services
from apps.evaluation.models import DEFAULT_TIER_RULES, EvaluationRun, TierRule
from apps.inference.models import ModelVersion

from .conftest import make_version, register_rigged, softmax, store_image

pytestmark = pytest.mark.django_db

LABELS = ["char-0", "char-1", "ghost"]  # "ghost" is not in the dataset; "char-2" is unknown to the model
LOGITS = [2.0, 1.0, 0.0]  # every image: char-0 with p0 = softmax(LOGITS)[0]


def evaluate(model_version, dataset_version, split="test", **options) -> EvaluationRun:
    run = services.evaluation_run_create(model_version=model_version, dataset_version=dataset_version, split=split,
                                         queue=False, **options)
    return services.evaluation_run_execute(run_id=run.pk)


@pytest.fixture
def version(three_characters):
    return make_version("v-eval", three_characters)  # per character: 3 train, 2 val, 4 test


@pytest.fixture
def rigged(version):
    return register_rigged("rigged", LABELS, LOGITS, dataset_version=version)


def test_metrics_and_rows_by_hand_with_unknown_and_absent_classes(version, rigged):
    run = evaluate(rigged, version)
    assert run.status == EvaluationRun.Status.SUCCEEDED, run.error
    p0 = softmax(LOGITS)[0]
    assert run.labels == ["char-0", "char-1", "ghost", "char-2"]
    assert run.images == 12
    assert run.top1 == pytest.approx(1 / 3)
    assert run.top5 == pytest.approx(2 / 3)  # char-2 is never in the top five: the model cannot answer it
    assert run.mean_per_class_accuracy == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3; ghost has no support
    assert run.macro_precision == pytest.approx(1 / 9) and run.macro_recall == pytest.approx(1 / 3)
    assert run.macro_f1 == pytest.approx(0.5 / 3)
    assert run.ece == pytest.approx(abs(1 / 3 - p0), abs=1e-5)
    assert run.confusion_matrix == [[4, 0, 0, 0], [4, 0, 0, 0], [0, 0, 0, 0], [4, 0, 0, 0]]
    assert [(p["true"], p["predicted"], p["count"]) for p in run.confused_pairs] == [
        ("char-1", "char-0", 4), ("char-2", "char-0", 4)]
    rows = {r.label: r for r in run.characters.all()}
    assert set(rows) == {"char-0", "char-1", "char-2", "ghost"}
    zero = rows["char-0"]
    assert (zero.support, zero.correct, zero.predicted, zero.accuracy) == (4, 4, 12, 1.0)
    assert zero.precision == pytest.approx(1 / 3) and zero.f1 == pytest.approx(0.5)
    assert zero.tier is None and zero.mistaken_for == "" and zero.character.slug == "char-0"
    one = rows["char-1"]
    assert (one.accuracy, one.precision, one.f1, one.mistaken_for, one.mistaken_count) == (0.0, 0.0, 0.0, "char-0", 4)
    assert (one.tier, one.target, one.tier_name) == (1, 100, "P1: never recognised")
    unknown = rows["char-2"]  # a dataset character the model does not know: counted wrong, tiered
    assert (unknown.in_model, unknown.in_split, unknown.accuracy, unknown.tier) == (False, True, 0.0, 1)
    ghost = rows["ghost"]  # a model class the split lacks: a row with support 0, never tiered
    assert (ghost.in_model, ghost.in_split, ghost.support, ghost.accuracy, ghost.tier) == (True, False, 0, None, None)
    assert ghost.character is None
    assert any("char-2" in note and "unknown to the model" in note for note in run.notes)
    assert any("ghost" in note and "no test images" in note for note in run.notes)
    # Serving path: latency measured per image, the device and backend recorded.
    assert run.latency_p50_ms > 0 and run.latency_p95_ms >= run.latency_p50_ms and run.images_per_second > 0
    assert run.device.startswith("cpu") and run.backend == "torch" and run.speed["single"]["images"] == 5
    # A clean split, checked against the model's training split.
    assert run.leak_report["reference"] == "v-eval/train" and run.leak_report["leaked_images"] == 0
    assert run.leak_report["checked"] == 12 and run.leak_report["training_images"] == 9


def test_threshold_from_val_is_set_on_a_version_without_one(version, rigged):
    run = evaluate(rigged, version)
    p0 = float(softmax(LOGITS)[0])
    # On val only char-0's two images are right, both at p0: keeping 95% of them means threshold p0.
    assert run.suggested_threshold == pytest.approx(p0, abs=1e-6)
    assert run.threshold["reference"] == "v-eval/val" and run.threshold["correct_accepted"] == 1.0
    assert run.threshold["model_version_threshold"] == "set"
    rigged.refresh_from_db()
    assert rigged.confidence_threshold == pytest.approx(p0, abs=1e-6)
    # A threshold chosen by hand is kept, unless the run is asked to apply its own.
    ModelVersion.objects.filter(pk=rigged.pk).update(confidence_threshold=0.9)
    assert evaluate(rigged, version).threshold["model_version_threshold"] == "kept"
    assert ModelVersion.objects.get(pk=rigged.pk).confidence_threshold == 0.9
    assert evaluate(rigged, version, apply_threshold=True).threshold["model_version_threshold"] == "set"
    assert ModelVersion.objects.get(pk=rigged.pk).confidence_threshold == pytest.approx(p0, abs=1e-6)


def test_a_test_run_puts_its_numbers_on_the_model_version_for_the_promotion_gate(version, rigged, settings):
    from apps.core.api import ServiceError
    from apps.inference.services import promotion_gate_check

    ModelVersion.objects.filter(pk=rigged.pk).update(metrics={"best_val_accuracy": 0.9})
    settings.KYARA_PROMOTION_MIN = 0.5
    with pytest.raises(ServiceError, match="no 'accuracy' metric yet"):
        promotion_gate_check(alias="default", version=ModelVersion.objects.get(pk=rigged.pk))
    run = evaluate(rigged, version)
    rigged.refresh_from_db()
    assert rigged.metrics["accuracy"] == pytest.approx(1 / 3) and rigged.metrics["evaluation_run"] == run.pk
    assert rigged.metrics["best_val_accuracy"] == 0.9 and rigged.metrics["leaked_test_images"] == 0
    with pytest.raises(ServiceError, match="below the 0.5 required"):
        promotion_gate_check(alias="default", version=rigged)
    evaluate(rigged, version, split="val")  # a val run does not replace the test numbers
    rigged.refresh_from_db()
    assert rigged.metrics["evaluation_run"] == run.pk


def test_evaluating_val_reuses_its_own_pass_for_the_threshold(version, rigged):
    run = evaluate(rigged, version, split="val")
    assert run.images == 6 and run.suggested_threshold == pytest.approx(float(softmax(LOGITS)[0]), abs=1e-6)


def test_leaks_against_the_models_training_split_are_found_and_reported_first(three_characters, version, rigged):
    from apps.characters.models import DatasetItem

    char0, char1, _ = three_characters
    trained_on = DatasetItem.objects.filter(version=version, split="train", character=char1).select_related("image")
    exact = trained_on[0].image
    near_of = trained_on[1].image
    near_hash = to_unsigned(near_of.phash) ^ 0b101  # 2 bits away
    near = store_image(label=1, seed=5000, character=char1, phash=near_hash)
    later = make_version("v-later", three_characters, train=1, val=0, test=1, seed_base=900,
                         extra=[(exact, char1, "test"), (near, char1, "test")])
    run = evaluate(rigged, later)
    report = run.leak_report
    assert report["reference"] == "v-eval/train"  # what the model saw, not v-later's own training split
    assert (report["checked"], report["exact"], report["near"], report["leaked_images"]) == (5, 1, 1, 2)
    kinds = {(e["kind"], e["image"], e["train_image"], e["distance"]) for e in report["examples"]}
    assert kinds == {("exact", exact.pk, exact.pk, 0), ("near", near.pk, near_of.pk, 2)}
    # 5 test images: char-0 right, char-1 ×3 wrong (two of them leaked), char-2 wrong; without the leaks 1/3.
    assert run.top1 == pytest.approx(1 / 5) and report["accuracy_without_leaks"] == pytest.approx(1 / 3)
    assert run.notes[0].startswith("LEAK: 2 of 5")
    assert any("trained on v-eval" in note for note in run.notes)


def test_same_source_post_across_splits_is_a_leak(three_characters, version, rigged):
    from apps.characters.models import DatasetItem, Image

    train_item = DatasetItem.objects.filter(version=version, split="train").select_related("image").first()
    test_item = DatasetItem.objects.filter(version=version, split="test").select_related("image").first()
    Image.objects.filter(pk__in=[train_item.image_id, test_item.image_id]).update(source_site="safebooru",
                                                                                  source_post_id="42")
    report = evaluate(rigged, version).leak_report
    assert (report["same_post"], report["leaked_images"]) == (1, 1)


def test_default_tier_rules():
    rules = services.tier_rules()
    assert [(r.priority, r.max_accuracy, r.inclusive, r.images) for r in rules] == [
        (1, 0.0, True, 100), (2, 0.6, False, 80), (3, 0.8, False, 60)]
    tiers = {acc: getattr(services.tier_for(acc, rules), "priority", None)
             for acc in (0.0, 0.01, 0.5999, 0.6, 0.7999, 0.8, 0.95, 1.0)}
    assert tiers == {0.0: 1, 0.01: 2, 0.5999: 2, 0.6: 3, 0.7999: 3, 0.8: None, 0.95: None, 1.0: None}
    assert services.tier_for(None, rules) is None
    # Without any row the default plan still applies; an inactive rule is skipped.
    TierRule.objects.all().delete()
    assert [r.images for r in services.tier_rules()] == [rule["images"] for rule in DEFAULT_TIER_RULES]
    TierRule.objects.create(priority=1, name="only", max_accuracy=0.5, images=10, active=False)
    TierRule.objects.create(priority=2, name="half", max_accuracy=0.9, images=20)
    assert [r.name for r in services.tier_rules()] == ["half"]


def test_rules_are_data_edited_rules_change_the_tiers(version, rigged):
    TierRule.objects.filter(priority=3).update(max_accuracy=1.0, inclusive=True, images=7)
    rows = {r.label: r for r in evaluate(rigged, version).characters.all()}
    assert (rows["char-0"].tier, rows["char-0"].target) == (3, 7)
    assert rows["char-1"].tier == 1


def test_low_support_characters_are_flagged_not_tiered(settings, version, rigged):
    settings.KYARA_EVAL_MIN_SUPPORT = 5
    rows = {r.label: r for r in evaluate(rigged, version).characters.all()}
    assert rows["char-1"].low_support and rows["char-1"].tier is None and rows["char-1"].provisional_tier == 1
    assert rows["char-1"].target == 100  # what the plan would ask if told to include low-support characters
    assert not rows["ghost"].low_support  # support 0 is "not in the split", not "low support"


def test_a_model_that_cannot_load_fails_the_run_with_the_reason(version, rigged):
    rigged.artifact_path.unlink()
    run = evaluate(rigged, version)
    assert run.status == EvaluationRun.Status.FAILED and "missing" in run.error and run.finished_at
    assert not run.characters.exists()
    # A finished run is never run again.
    assert services.evaluation_run_execute(run_id=run.pk) is None


def test_refuses_an_empty_or_unknown_split(three_characters, rigged):
    from apps.core.api import ServiceError

    empty = make_version("v-no-test", three_characters, train=1, val=1, test=0, seed_base=700)
    with pytest.raises(ServiceError, match="no test images"):
        services.evaluation_run_create(model_version=rigged, dataset_version=empty)
    with pytest.raises(ServiceError, match="must be one of"):
        services.evaluation_run_create(model_version=rigged, dataset_version=empty, split="holdout")


@pytest.mark.backend
def test_create_queues_the_task_after_commit(version, rigged, django_capture_on_commit_callbacks, monkeypatch):
    queued = []
    monkeypatch.setattr(services, "enqueue", lambda *args, **kwargs: queued.append((args, kwargs)))
    with django_capture_on_commit_callbacks(execute=True):
        run = services.evaluation_run_create(model_version=rigged, dataset_version=version)
        assert queued == []
    assert queued == [(("apps.evaluation.tasks.run_evaluation", run.pk), {"group": f"evaluation-{run.pk}"})]
    assert run.status == EvaluationRun.Status.QUEUED


def test_compare_two_runs(version, rigged):
    before = evaluate(rigged, version)
    other = register_rigged("rigged-1", LABELS, [1.0, 2.0, 0.0], dataset_version=version)  # always char-1
    after = evaluate(other, version)
    diff = selectors.evaluation_runs_compare(base=before, other=after)
    changes = {row["character"]: (row["change"], row["delta"]) for row in diff["characters"]}
    assert changes == {"char-0": ("worse", -1.0), "char-1": ("better", 1.0), "char-2": ("same", 0.0)}
    assert diff["counts"] == {"worse": 1, "better": 1, "same": 1}
    assert diff["headline"]["top1"]["delta"] == pytest.approx(0.0)
    assert [row["character"] for row in diff["characters"]][0] == "char-0"  # worst first
    out = StringIO()
    call_command("compare_evaluations", str(before.pk), str(after.pk), stdout=out)
    assert "1 better, 1 same, 1 worse" in out.getvalue() and "char-0" in out.getvalue()
    with pytest.raises(CommandError, match="No evaluation run"):
        call_command("compare_evaluations", str(before.pk), "999999")


def test_history_shows_accuracy_across_runs_and_images_across_versions(three_characters, version, rigged):
    first = evaluate(rigged, version)
    bigger = make_version("v-bigger", three_characters, train=5, val=2, test=4, seed_base=3000)
    other = register_rigged("rigged-1", LABELS, [1.0, 2.0, 0.0], dataset_version=bigger)
    second = evaluate(other, bigger)
    loop = {row["character"]: row for row in selectors.evaluation_loop(run=second)}
    assert set(loop) == {"char-0", "char-1", "char-2"}
    one = loop["char-1"]
    assert [(r["run"], r["accuracy"]) for r in one["runs"]] == [(first.pk, 0.0), (second.pk, 1.0)]
    assert [(v["dataset_version"], v["train"], v["total"]) for v in one["dataset_versions"]] == [
        ("v-eval", 3, 9), ("v-bigger", 5, 11)]
    assert selectors.character_slug_history("char-1")["runs"][-1]["model_version"] == "rigged-1"


def test_probabilities_are_those_of_the_serving_predictor(version, rigged):
    """The evaluation goes through the inference app's predictor cache: the same loaded model serves."""
    from apps.inference.loading import predictor_cache

    evaluate(rigged, version)
    loaded = predictor_cache.peek(rigged)
    assert loaded is not None
    image = version.items.filter(split="test").first().image
    probabilities = loaded.predictor.predict([image.file.read()])[0]
    assert np.allclose(probabilities, softmax(LOGITS), atol=1e-6)


@pytest.mark.backend
def test_a_run_whose_worker_died_is_marked_lost_and_can_be_run_again(version, rigged, settings, api_client):
    from datetime import timedelta

    from django.utils import timezone

    stuck = services.evaluation_run_create(model_version=rigged, dataset_version=version, queue=False)
    recent = services.evaluation_run_create(model_version=rigged, dataset_version=version, queue=False)
    from apps.core.jobs import jobs_mark_lost

    long_ago = timezone.now() - timedelta(seconds=settings.KYARA_JOB_LOST_AFTER + 120)
    EvaluationRun.objects.filter(pk=stuck.pk).update(status=EvaluationRun.Status.RUNNING, started_at=long_ago,
                                                     heartbeat_at=long_ago)
    EvaluationRun.objects.filter(pk=recent.pk).update(status=EvaluationRun.Status.RUNNING, started_at=long_ago,
                                                      heartbeat_at=timezone.now())
    assert jobs_mark_lost() == {"evaluation.EvaluationRun": [stuck.pk]}  # the scheduled sweep's work
    listed = api_client.get("/api/v1/evaluations/").json()
    by_id = {r["id"]: r for r in listed["results"]}
    assert by_id[stuck.pk]["status"] == "failed" and by_id[recent.pk]["status"] == "running"
    stuck.refresh_from_db()
    assert stuck.error.startswith("lost:")
    assert evaluate(rigged, version).status == EvaluationRun.Status.SUCCEEDED  # a new run of the same pair works
