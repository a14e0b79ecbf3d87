"""Compare and promote, decided by data: a new model that always answers char-0 against a default that always
answers char-1, on test splits of four char-0 and two char-1 images (67% against 33%, every time). The cycle
starts at its evaluate stage (its crawl, review and training are the end-to-end test's) and evaluates for real."""
from __future__ import annotations

import pytest

from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
from apps.improvement.models import Cycle
from apps.improvement.services import cycle_advance, initial_stages
from apps.inference.models import AliasChange, ModelAlias
from apps.inference.services import model_alias_set
from apps.training.models import TrainingJob
from tests.evaluation.conftest import make_characters, make_version, register_rigged, store_image

ALWAYS_CHAR_0 = [4.0, 0.0]
ALWAYS_CHAR_1 = [0.0, 4.0]


def _version(name: str, characters, seed_base: int):
    """Two test images of each character, and two more of char-0."""
    extra = [(store_image(label=0, seed=seed_base + 500 + i, character=characters[0]), characters[0], "test")
             for i in range(2)]
    return make_version(name, characters, train=2, val=1, test=2, seed_base=seed_base, extra=extra)


@pytest.fixture
def at_evaluate(db, settings, django_capture_on_commit_callbacks):
    """``start(**options)``: a cycle whose new model (trained on v1) waits to be evaluated, default being a
    model trained on v0 and evaluated on v0/test."""
    settings.KYARA_RUN_TASKS_INLINE = True  # the evaluations the cycle queues run here
    characters = make_characters(["char-0", "char-1"])
    v0, v1 = _version("v0", characters, 0), _version("v1", characters, 100)
    default = register_rigged("old-default", ["char-0", "char-1"], ALWAYS_CHAR_1, dataset_version=v0)
    model_alias_set(name="default", version=default)
    run = evaluation_run_create(model_version=default, dataset_version=v0, queue=False)
    run = evaluation_run_execute(run_id=run.pk)
    candidate = register_rigged("new-model", ["char-0", "char-1"], ALWAYS_CHAR_0, dataset_version=v1)

    def start(**options) -> Cycle:
        job = TrainingJob.objects.create(dataset_version=v1, status="succeeded", model_version=candidate)
        stages = [{**record, "status": "succeeded"} if record["name"] in ("plan", "crawl", "review", "wait", "freeze",
                                                                        "train") else record
                  for record in initial_stages()]
        cycle = Cycle.objects.create(from_evaluation=run, stage="evaluate", stages=stages, dataset_version=v1,
                                     training_job=job, **options)
        with django_capture_on_commit_callbacks(execute=True):  # evaluations run, their end advances the cycle
            cycle_advance(cycle_id=cycle.pk)
        return Cycle.objects.get(pk=cycle.pk)

    return {"start": start, "default": default, "candidate": candidate, "run": run}


def _splits(cycle: Cycle) -> list[tuple]:
    return [(s["split"], round(s["candidate"]["top1_clean"], 3), round(s["baseline"]["top1_clean"], 3), s["better"])
            for s in cycle.comparison["splits"]]


def test_better_by_the_margin_and_allowed_to_promote_moves_default(at_evaluate):
    cycle = at_evaluate["start"](promote_if_better=True, margin=0.3)
    assert cycle.status == "succeeded", cycle.error
    assert _splits(cycle) == [("new", 0.667, 0.333, True), ("previous", 0.667, 0.333, True)]
    assert cycle.promoted and cycle.hold_reason == "" and cycle.comparison["better"]
    assert ModelAlias.objects.get(name="default").version == at_evaluate["candidate"]
    assert not ModelAlias.objects.filter(name="candidate").exists()
    assert cycle.baseline_evaluation_previous == at_evaluate["run"]  # default on v0/test: reused, not run again


def test_not_better_by_the_margin_is_held_as_candidate_with_the_numbers(at_evaluate):
    cycle = at_evaluate["start"](promote_if_better=True, margin=0.34)
    assert cycle.status == "succeeded" and not cycle.promoted
    assert _splits(cycle) == [("new", 0.667, 0.333, False), ("previous", 0.667, 0.333, False)]
    assert cycle.hold_reason == (
        "not better by the margin: on v1/test the new model's top-1 is 66.7% against default's 33.3% (needs "
        "+34.0% or more); on v0/test the new model's top-1 is 66.7% against default's 33.3% (needs +34.0% or more)")
    assert ModelAlias.objects.get(name="default").version == at_evaluate["default"]
    candidate = ModelAlias.objects.get(name="candidate")
    assert candidate.version == at_evaluate["candidate"]
    assert AliasChange.objects.get(alias="candidate").why.startswith(f"improvement cycle {cycle.pk}: not better")
    promote = cycle.stage_record("promote")
    assert promote["status"] == "succeeded" and promote["detail"].startswith("held: candidate → new-model")


def test_better_but_not_allowed_to_promote_is_held(at_evaluate):
    cycle = at_evaluate["start"](promote_if_better=False, margin=0.005)
    assert cycle.comparison["better"] and not cycle.promoted
    assert cycle.hold_reason.endswith("but the cycle may not promote (promote_if_better is off)")
    assert ModelAlias.objects.get(name="default").version == at_evaluate["default"]
    assert ModelAlias.objects.get(name="candidate").version == at_evaluate["candidate"]


def test_the_promotion_gate_still_applies(at_evaluate, settings):
    settings.KYARA_PROMOTION_MIN = 0.9  # the new model's recorded test accuracy (67%) is below it
    cycle = at_evaluate["start"](promote_if_better=True, margin=0.005)
    assert cycle.comparison["better"] and not cycle.promoted
    assert cycle.hold_reason.startswith("the promotion was refused: new-model has accuracy 0.6667, below the 0.9")
    assert ModelAlias.objects.get(name="default").version == at_evaluate["default"]


def test_without_a_default_there_is_nothing_to_beat(at_evaluate):
    ModelAlias.objects.filter(name="default").delete()
    cycle = at_evaluate["start"](promote_if_better=True)
    assert cycle.comparison == {**cycle.comparison, "better": True, "reason": "no default model to beat",
                                "splits": []}
    assert cycle.baseline_model is None and cycle.baseline_evaluation is None and cycle.promoted
    assert ModelAlias.objects.get(name="default").version == at_evaluate["candidate"]
