"""apps.ml.metrics against small cases computed by hand.

The main case: four classes; class 2 is in the split but never predicted, class 3 is not in the split
(support 0) but predicted once.

    row  true  probabilities              predicted  confidence  correct
    0    0     .70 .20 .05 .05            0          .7          yes
    1    0     .50 .30 .10 .10            0          .5          yes
    2    0     .30 .60 .05 .05            1          .6          no
    3    1     .10 .80 .05 .05            1          .8          yes
    4    1     .10 .20 .10 .60            3          .6          no
    5    2     .90 .05 .03 .02            0          .9          no
    6    2     .20 .40 .30 .10            1          .4          no

Confusion (rows true, columns predicted): [2 1 0 0] [0 1 0 1] [1 1 0 0] [0 0 0 0].
"""
import math

import numpy as np
import pytest

from apps.ml import metrics

pytestmark = pytest.mark.no_scale

Y = [0, 0, 0, 1, 1, 2, 2]
P = [
    [0.70, 0.20, 0.05, 0.05],
    [0.50, 0.30, 0.10, 0.10],
    [0.30, 0.60, 0.05, 0.05],
    [0.10, 0.80, 0.05, 0.05],
    [0.10, 0.20, 0.10, 0.60],
    [0.90, 0.05, 0.03, 0.02],
    [0.20, 0.40, 0.30, 0.10],
]


def test_confusion_matrix_and_per_class_rows():
    result = metrics.evaluate_probabilities(Y, P)
    assert result["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0]]
    rows = result["per_class"]
    assert [(r["support"], r["predicted"], r["correct"]) for r in rows] == [(3, 3, 2), (2, 3, 1), (2, 0, 0), (0, 1, 0)]
    assert rows[0]["accuracy"] == pytest.approx(2 / 3) and rows[0]["precision"] == pytest.approx(2 / 3)
    assert rows[0]["f1"] == pytest.approx(2 / 3) and rows[0]["mistaken_for"] == 1 and rows[0]["mistaken_count"] == 1
    assert rows[1]["recall"] == pytest.approx(1 / 2) and rows[1]["precision"] == pytest.approx(1 / 3)
    assert rows[1]["f1"] == pytest.approx(0.4) and rows[1]["mistaken_for"] == 3
    # Never predicted: precision 0 (not undefined), F1 0; a tie of mistakes goes to the lower index.
    assert rows[2] == {"support": 2, "predicted": 0, "correct": 0, "accuracy": 0.0, "recall": 0.0, "precision": 0.0,
                       "f1": 0.0, "mistaken_for": 0, "mistaken_count": 1}
    # Absent from the split: no accuracy or F1 to speak of, and a precision of 0 for its false positive.
    assert rows[3]["accuracy"] is None and rows[3]["f1"] is None and rows[3]["precision"] == 0.0
    assert rows[3]["mistaken_for"] is None


def test_summary_metrics():
    result = metrics.evaluate_probabilities(Y, P)
    assert result["images"] == 7
    assert result["top1"] == pytest.approx(3 / 7)
    assert result["top5"] == 1.0  # four classes: the true one is always among the top five
    # Macro over the three classes in the split; the absent class 3 does not count.
    assert result["mean_per_class_accuracy"] == pytest.approx(7 / 18)
    assert result["macro_recall"] == pytest.approx(7 / 18)
    assert result["macro_precision"] == pytest.approx(1 / 3)
    assert result["macro_f1"] == pytest.approx(16 / 45)
    assert result["predicted"] == [0, 0, 1, 1, 3, 0, 1]
    assert result["confidence"] == pytest.approx([0.7, 0.5, 0.6, 0.8, 0.6, 0.9, 0.4])


def test_top_k_accuracy():
    assert metrics.top_k_accuracy(Y, P, 1) == pytest.approx(3 / 7)
    assert metrics.top_k_accuracy(Y, P, 2) == pytest.approx(6 / 7)  # only row 5 misses (.90 .05 | true 2)
    assert metrics.top_k_accuracy(Y, P, 50) == 1.0
    assert metrics.top_k_accuracy([], np.zeros((0, 3)), 5) == 0.0
    # A class the model cannot output (an all-zero column) is never "in the top k", even with k ≥ K.
    assert metrics.top_k_accuracy([2, 0], [[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]], 5) == 0.5
    # Ties are broken by column order, the same way for every row.
    assert metrics.top_k_accuracy([1], [[0.5, 0.5, 0.0]], 1) == 0.0


def test_most_confused_pairs():
    pairs = metrics.most_confused_pairs(np.array([[5, 3, 0], [1, 2, 0], [0, 3, 1]]), limit=2)
    assert pairs == [{"true": 0, "predicted": 1, "count": 3, "share": 3 / 8},
                     {"true": 2, "predicted": 1, "count": 3, "share": 3 / 4}]
    assert [(p["true"], p["predicted"]) for p in metrics.evaluate_probabilities(Y, P)["confused_pairs"]] == [
        (0, 1), (1, 3), (2, 0), (2, 1)]


def test_calibration_by_hand():
    result = metrics.evaluate_probabilities(Y, P, bins=10)
    # Bins (.3,.4] .4 wrong | (.4,.5] .5 right | (.5,.6] .6 .6 wrong | (.6,.7] .7 right | (.7,.8] .8 right
    # | (.8,.9] .9 wrong: (.4 + .5 + 2 × .6 + .3 + .2 + .9) / 7 = 0.5
    assert result["ece"] == pytest.approx(0.5)
    bins = result["reliability"]
    assert len(bins) == 10 and [b["count"] for b in bins] == [0, 0, 0, 1, 1, 2, 1, 1, 1, 0]
    assert bins[5] == {"lower": 0.5, "upper": 0.6, "count": 2, "accuracy": 0.0, "confidence": pytest.approx(0.6)}
    assert bins[0]["accuracy"] is None and bins[0]["confidence"] is None


def test_calibration_edges():
    ece, bins = metrics.calibration([0.0, 1.0, 0.7, 0.7000001], [False, True, True, True], bins=10)
    assert [b["count"] for b in bins] == [1, 0, 0, 0, 0, 0, 1, 1, 0, 1]
    assert ece == pytest.approx((0.0 + 0.3 + (1 - 0.7000001) + 0.0) / 4)
    assert metrics.calibration([], [], bins=3) == (0.0, [
        {"lower": 0.0, "upper": 1 / 3, "count": 0, "accuracy": None, "confidence": None},
        {"lower": 1 / 3, "upper": 2 / 3, "count": 0, "accuracy": None, "confidence": None},
        {"lower": 2 / 3, "upper": 1.0, "count": 0, "accuracy": None, "confidence": None}])
    perfect, _ = metrics.calibration([1.0, 1.0], [True, True])
    assert perfect == 0.0


def test_suggest_threshold():
    confidence = [0.7, 0.5, 0.6, 0.8, 0.6, 0.9, 0.4]
    correct = [True, True, False, True, False, False, False]
    loose = metrics.suggest_threshold(confidence, correct, keep=0.95)
    # floor(0.05 × 3) = 0 correct answers may be dropped: the lowest correct confidence.
    assert loose == {"threshold": 0.5, "keep": 0.95, "correct_accepted": 1.0, "wrong_rejected": 0.25,
                     "coverage": pytest.approx(6 / 7), "accuracy_accepted": 0.5, "images": 7}
    strict = metrics.suggest_threshold(confidence, correct, keep=0.6)
    # floor(0.4 × 3) = 1 may be dropped: the second-lowest correct confidence.
    assert strict["threshold"] == 0.7 and strict["correct_accepted"] == pytest.approx(2 / 3)
    assert strict["wrong_rejected"] == 0.75 and strict["accuracy_accepted"] == pytest.approx(2 / 3)
    twenty = metrics.suggest_threshold([i / 20 for i in range(1, 21)], [True] * 20, keep=0.95)
    assert twenty["threshold"] == 0.1 and twenty["correct_accepted"] == 0.95 and twenty["wrong_rejected"] is None
    assert metrics.suggest_threshold([0.9], [False]) is None
    with pytest.raises(ValueError):
        metrics.suggest_threshold([0.9], [True], keep=0)


def test_latency_summary():
    summary = metrics.latency_summary([1.0, 2.0, 3.0, 4.0])
    assert summary["p50_ms"] == 2.5 and summary["p95_ms"] == pytest.approx(3.85)
    assert summary["images_per_second"] == pytest.approx(400.0) and summary["images"] == 4
    assert metrics.latency_summary([])["p50_ms"] is None


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        metrics.evaluate_probabilities([0, 1], [[1.0, 0.0]])
    with pytest.raises(ValueError):
        metrics.evaluate_probabilities([2], [[0.5, 0.5]])


def test_empty_split():
    result = metrics.evaluate_probabilities([], np.zeros((0, 3)))
    assert result["images"] == 0 and result["top1"] == 0.0 and result["mean_per_class_accuracy"] == 0.0
    assert result["confusion_matrix"] == [[0, 0, 0]] * 3 and not math.isnan(result["ece"])


def test_no_django_in_the_metrics_module():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(metrics.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "collections", "numpy"}
