"""Classification metrics for an evaluation: numpy only, no Django, no torch.

Everything works in one *class space* of ``K`` columns chosen by the caller: usually the model's labels
followed by the evaluated split's characters the model does not know. ``probabilities`` is ``N × K``;
a column the model cannot output is all zeros, so it is never predicted (an absent class), and a class
nobody in the split belongs to has support 0 (it can still be predicted, wrongly).

Conventions (the same as scikit-learn's with ``zero_division=0`` where both are defined):

- precision of a class that is never predicted is 0; recall and accuracy of a class are the same thing
  (correct / support) and are ``None`` for a class with no support;
- macro averages and the mean per-class accuracy are taken over the classes *in the split*
  (support > 0): a class the split does not hold has no recall to average, and its false positives
  already lower the recall of the classes they were taken from;
- calibration bins are ``(lower, upper]`` of the top-1 confidence, the first bin also takes 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_arrays(y_true, probabilities) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probabilities must be N × K with N = {y.shape[0]}, got shape {p.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError("every true label must be a column of probabilities")
    return y, p


def predictions(probabilities) -> np.ndarray:
    """Top-1 class per row (the first column wins a tie, as ``argmax`` does)."""
    return np.asarray(probabilities).argmax(axis=1)


def top_k_accuracy(y_true, probabilities, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` highest probabilities (stable for ties).

    A true class of probability 0 is never a hit: with fewer than ``k`` classes it would otherwise count
    a class the model cannot output (an all-zero column) as "in the top k"."""
    y, p = _as_arrays(y_true, probabilities)
    if not y.size:
        return 0.0
    k = max(1, min(k, p.shape[1]))
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    possible = p[np.arange(y.size), y] > 0
    return float(((order == y[:, None]).any(axis=1) & possible).mean())


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``K × K`` counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def per_class(matrix: np.ndarray) -> list[dict]:
    """Support, predicted, correct, accuracy (= recall), precision, F1 and the most frequent mistake per class.

    ``mistaken_for`` is the column index this class's images were most often given instead (the lowest
    index on a tie), ``None`` when none of them was misclassified.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    correct = np.diag(matrix)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    rows = []
    for c in range(matrix.shape[0]):
        s, n_pred, hit = int(support[c]), int(predicted[c]), int(correct[c])
        recall = hit / s if s else None
        precision = hit / n_pred if n_pred else 0.0
        if recall is None:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        mistaken = int(off[c].argmax()) if off[c].any() else None
        rows.append({"support": s, "predicted": n_pred, "correct": hit, "accuracy": recall, "recall": recall,
                     "precision": precision, "f1": f1, "mistaken_for": mistaken,
                     "mistaken_count": int(off[c, mistaken]) if mistaken is not None else 0})
    return rows


def macro_averages(rows: Sequence[dict]) -> dict:
    """Mean per-class accuracy and macro precision, recall and F1 over the classes with support."""
    present = [r for r in rows if r["support"]]
    if not present:
        return {"mean_per_class_accuracy": 0.0, "macro_precision": 0.0, "macro_recall": 0.0, "macro_f1": 0.0}
    recall = float(np.mean([r["recall"] for r in present]))
    return {"mean_per_class_accuracy": recall, "macro_precision": float(np.mean([r["precision"] for r in present])),
            "macro_recall": recall, "macro_f1": float(np.mean([r["f1"] for r in present]))}


def most_confused_pairs(matrix: np.ndarray, *, limit: int = 10) -> list[dict]:
    """The largest off-diagonal cells: ``{"true", "predicted", "count", "share"}`` (share of the true
    class's images), largest first, then by true and predicted index."""
    matrix = np.asarray(matrix, dtype=np.int64)
    support = matrix.sum(axis=1)
    cells = [(int(matrix[t, p]), t, p) for t, p in zip(*np.nonzero(matrix), strict=True) if t != p]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": t, "predicted": p, "count": n, "share": n / int(support[t])} for n, t, p in cells[:limit]]


def calibration(confidence, correct, *, bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error and the reliability diagram's bins.

    ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b| over equal-width bins of the top-1 confidence.
    Every bin is listed (empty ones with ``count`` 0 and ``None`` for accuracy and confidence).
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=np.float64).reshape(-1)
    if bins < 1:
        raise ValueError("bins must be at least 1")
    # Edges k / bins are the same floats as the literals (0.7 is 7 / 10), so a confidence of exactly 0.7
    # lands in (0.6, 0.7] and not, through 0.7 * 10 = 7.000000000000001, in the next bin.
    edges = np.arange(bins + 1) / bins
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        accuracy = float(hit[mask].mean()) if n else None
        mean_conf = float(conf[mask].mean()) if n else None
        if n:
            ece += n / conf.size * abs(accuracy - mean_conf)
        table.append({"lower": b / bins, "upper": (b + 1) / bins, "count": n, "accuracy": accuracy,
                      "confidence": mean_conf})
    return float(ece), table


def suggest_threshold(confidence, correct, *, keep: float = 0.95) -> dict | None:
    """An open-set confidence threshold: the highest one that still accepts ``keep`` of the correct answers.

    Meant for the validation split. Without pictures of unknown characters, the model's own wrong answers
    stand in for them (they are low-confidence in the same way), so the result also says what share of
    wrong answers the threshold turns into "unknown" and the accuracy of what it accepts. An answer is
    accepted when its top-1 probability is >= the threshold (the predict API answers "unknown" below it).
    ``None`` when no answer is correct.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=bool).reshape(-1)
    right = np.sort(conf[hit])
    if not right.size:
        return None
    if not 0 < keep <= 1:
        raise ValueError("keep must be in (0, 1]")
    # Dropping the ``floor((1 - keep) · n)`` least confident correct answers keeps at least ``keep`` of them.
    threshold = float(right[int(np.floor((1 - keep) * right.size + 1e-9))])
    accepted = conf >= threshold
    wrong = ~hit
    return {
        "threshold": threshold,
        "keep": keep,
        "correct_accepted": float(accepted[hit].mean()),
        "wrong_rejected": float((~accepted[wrong]).mean()) if wrong.any() else None,
        "coverage": float(accepted.mean()),
        "accuracy_accepted": float(hit[accepted].mean()) if accepted.any() else None,
        "images": int(conf.size),
    }


def auroc(positive, negative) -> float | None:
    """Area under the ROC curve: the chance that a random ``positive`` score beats a random ``negative`` one
    (ties count half); ``None`` when either side is empty."""
    pos = np.asarray(positive, dtype=np.float64).reshape(-1)
    neg = np.asarray(negative, dtype=np.float64).reshape(-1)
    if not pos.size or not neg.size:
        return None
    _, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]  # tied scores share their average rank
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def open_set(confidence, known, *, threshold: float | None, stranger=None, stranger_limit: float = 0.5) -> dict:
    """Known-versus-unseen separation: AUROC of the chance of being one of the answers (top-1 confidence times one
    minus the stranger probability), and the share answered ``unknown`` (confidence below ``threshold``, or a
    stranger probability of ``stranger_limit`` or more) among images of characters the model answers for and
    among the others."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    known = np.asarray(known, dtype=bool).reshape(-1)
    strange = np.zeros(conf.size) if stranger is None else np.asarray(stranger, dtype=np.float64).reshape(-1)
    unknown = strange >= stranger_limit
    if threshold is not None:
        unknown |= conf < threshold
    score = conf * (1 - strange)
    return {"known_images": int(known.sum()), "unseen_images": int((~known).sum()), "threshold": threshold,
            "auroc": auroc(score[known], score[~known]),
            "unknown_rate_known": float(unknown[known].mean()) if known.any() else None,
            "unknown_rate_unseen": float(unknown[~known].mean()) if (~known).any() else None}


def latency_summary(milliseconds) -> dict:
    """p50, p95 and mean of per-image latencies, and the images per second they add up to."""
    ms = np.asarray(milliseconds, dtype=np.float64).reshape(-1)
    if not ms.size:
        return {"p50_ms": None, "p95_ms": None, "mean_ms": None, "images_per_second": None, "images": 0}
    total = float(ms.sum())
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean()),
            "images_per_second": ms.size / (total / 1000) if total > 0 else None, "images": int(ms.size)}


def evaluate_probabilities(y_true, probabilities, *, bins: int = 10, pairs: int = 10) -> dict:
    """Every metric of an evaluation from true classes and ``N × K`` probabilities in the class space."""
    y, p = _as_arrays(y_true, probabilities)
    k = p.shape[1]
    pred = predictions(p) if y.size else np.zeros(0, dtype=np.int64)
    matrix = confusion_matrix(y, pred, k)
    rows = per_class(matrix)
    confidence = p.max(axis=1) if y.size else np.zeros(0)
    correct = pred == y
    ece, reliability = calibration(confidence, correct, bins=bins)
    return {
        "images": int(y.size),
        "top1": float(correct.mean()) if y.size else 0.0,
        "top5": top_k_accuracy(y, p, 5),
        **macro_averages(rows),
        "ece": ece,
        "reliability": reliability,
        "confusion_matrix": matrix.tolist(),
        "confused_pairs": most_confused_pairs(matrix, limit=pairs),
        "per_class": rows,
        "predicted": pred.tolist(),
        "confidence": confidence.tolist(),
    }
