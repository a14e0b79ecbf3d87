"""What the model's answer says about an image's claimed label, and how much doubt that leaves (no Django).

The doubt is one number the review queue sorts on, largest first, in bands that never overlap:

    flagged (the model contradicts the label with high confidence)   3 + top-1 probability    [3 + flag, 4]
    disagreement (top-1 is another character, less sure)             2 + 1 - p(claimed)       (2, 3]
    (the queue puts images without a suggestion here)                NO_SUGGESTION = 2
    agreement, least sure first                                      1 + 1 - p(claimed)       (1, 2)
    unlabelled, or a label the model has no class for                1 - top-1 probability    [0, 1)

An image whose label the model cannot judge (unlabelled, or a character it was not trained on) comes last:
a person labels it from the suggestions, which is quick when the model is sure and slower otherwise, so
there too the least sure comes first.
"""
from __future__ import annotations

from dataclasses import dataclass

NO_SUGGESTION = 2.0
TOP_K = 3


@dataclass(frozen=True)
class Verdict:
    claimed_probability: float | None  # None: unlabelled, or the label is not among the model's classes
    agrees: bool | None  # top-1 is the claimed label; None when the model cannot judge it
    flagged: bool
    doubt: float


def judge(*, top: list[tuple[str, float]], claimed: str | None, claimed_probability: float | None,
          known: bool, flag_confidence: float) -> Verdict:
    """The verdict on ``claimed`` (a slug, or None when unlabelled) from the model's ``top`` answers.

    ``known``: the claimed label is one of the model's classes; ``claimed_probability``: the model's
    probability of it (None when not known: it cannot be read off a top-k that does not hold it).
    """
    top_slug, top_probability = top[0]
    if not claimed or not known:
        return Verdict(None, None, False, 1.0 - top_probability)
    agrees = top_slug == claimed
    flagged = not agrees and top_probability >= flag_confidence
    if flagged:
        doubt = 3.0 + top_probability
    elif agrees:
        doubt = 2.0 - top_probability
    else:
        doubt = 3.0 - (claimed_probability or 0.0)
    return Verdict(claimed_probability, agrees, flagged, doubt)
