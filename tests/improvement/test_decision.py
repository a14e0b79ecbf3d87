"""Compare and promote, decided by data (``at_evaluate``: a new model that always answers char-0 against a default
that always answers char-1, 67% against 33% on both test splits, every time). The cycle starts at its evaluate stage
(its crawl, review and training are the end-to-end test's) and evaluates for real."""
from __future__ import annotations

from apps.improvement.models import Cycle
from apps.inference.models import AliasChange, ModelAlias


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


def test_the_comparison_counts_what_the_gallery_covered(at_evaluate):
    """The characters default answered from their approved images (its gallery) on the new test split, how well,
    and which of them the new model has as classes."""
    from apps.evaluation.models import CharacterResult
    from apps.improvement.stages import gallery_coverage

    cycle = at_evaluate["start"](promote_if_better=True, margin=0.3)
    run = cycle.baseline_evaluation
    assert cycle.comparison["gallery"] == {"characters": 0, "now_classes": 0, "mean_accuracy": None, "rows": []}
    CharacterResult.objects.filter(run=run, label="char-0").update(source="gallery")  # as if default had no class
    CharacterResult.objects.create(run=run, label="char-9", support=2, correct=1, accuracy=0.5, source="gallery",
                                   in_model=False)
    covered = gallery_coverage(cycle)
    assert covered["characters"] == 2 and covered["now_classes"] == 1  # the new model knows char-0, not char-9
    row = next(r for r in covered["rows"] if r["character"] == "char-0")
    assert covered["mean_accuracy"] == (row["accuracy"] + 0.5) / 2 and row["now_a_class"]
