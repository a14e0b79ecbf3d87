"""Suspect labels by confident learning: the images whose given label the model contradicts with confidence.

This is cleanlab's ``find_label_issues(labels, pred_probs, filter_by="confident_learning",
return_indices_ranked_by="self_confidence")`` (Northcutt et al., 2021) in a few lines of numpy. cleanlab itself
would bring scikit-learn and pandas into every worker for these lines, and its default pruning (estimating how
many labels are wrong per class from the confident joint) needs more images per class than a val or test split
of a small dataset holds; the off-diagonal of the confident joint is the rule that stays meaningful there.

The rule: a class's threshold is the model's mean probability for it over the images labelled with it (its
average self-confidence, which label noise in that class lowers). An image is *confidently* of every class
whose probability reaches that class's threshold; when that class (the top answer, if several are) is not
the given label, and the model's top answer is not the given label either, the label is suspect. Most suspect
first: the lowest probability for the given label.
No Django in here: plain arrays in, indexes out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEVER = 2.0  # threshold of a class no image is labelled with: cleanlab's, above any probability
TOLERANCE = 1e-6  # a probability equal to the threshold but for float rounding reaches it (cleanlab's)


@dataclass(frozen=True)
class LabelIssue:
    index: int  # row of the image
    suspected: int  # the class the model is confident the image is
    probability: float  # the model's probability for ``suspected``
    self_confidence: float  # the model's probability for the given label


def confident_thresholds(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per class: the mean probability of that class over the images labelled with it; ``NEVER`` without any."""
    rows, classes = probabilities.shape
    given = probabilities[np.arange(rows), labels]
    counts = np.bincount(labels, minlength=classes)
    sums = np.bincount(labels, weights=given, minlength=classes)
    thresholds = np.divide(sums, counts, out=np.full(classes, NEVER), where=counts > 0)
    return np.clip(thresholds, TOLERANCE, None)


def find_label_issues(labels, probabilities) -> list[LabelIssue]:
    """The images whose label (column index into ``probabilities``) the model confidently contradicts, lowest
    self-confidence first (ties by row, so the order is stable)."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.size == 0:
        return []
    confident = probabilities >= confident_thresholds(labels, probabilities) - TOLERANCE
    how_many = confident.sum(axis=1)
    top = probabilities.argmax(axis=1)
    suspected = np.where(how_many > 1, top, confident.argmax(axis=1))
    rows = np.flatnonzero((how_many > 0) & (suspected != labels) & (top != labels))
    self_confidence = probabilities[np.arange(labels.size), labels]
    rows = rows[np.argsort(self_confidence[rows], kind="stable")]
    return [LabelIssue(int(i), int(suspected[i]), float(probabilities[i, suspected[i]]), float(self_confidence[i]))
            for i in rows]
