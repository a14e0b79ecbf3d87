"""Suspect labels from out-of-sample evidence: each image's nearest neighbours in embedding space, itself and its
near-duplicates left out, vote on its character. numpy only, no Django, no torch.

A label the model learned from (a training image) cannot be judged by the model's own answer for that image: it
was trained to give it. Its *neighbours* can: leave-one-out k-nearest-neighbour votes over the whole labelled set
(as cleanlab's Datalab and FiftyOne's mistakenness do) are out-of-sample for every image, training images
included, where a wrong label does its harm. The images of one near-duplicate group are left out of each other's
votes, so a mislabelled image and its copies cannot vouch for each other.

Brute force, a chunk of rows at a time: ``N × N`` dot products in ``chunk × N`` blocks (memory flat in N);
10^5 images of 1,280 dimensions take minutes on two cores. Beyond that an approximate index would pay.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Votes:
    own_share: np.ndarray  # per image: the weighted share of its neighbours that carry its label
    top: np.ndarray  # per image: the label most of its neighbours carry
    top_share: np.ndarray  # that label's share

    @property
    def agreement(self) -> float:
        """The share of images whose neighbours' majority is their own label: how well the embedding can judge."""
        return float((self.top_share <= self.own_share + 1e-12).mean()) if len(self.top) else 0.0


def neighbour_votes(vectors: np.ndarray, labels, groups=None, *, k: int = 10, scale: float = 10.0,
                    chunk: int = 1024) -> Votes:
    """Leave-one-out votes: for every row, its ``k`` most similar rows (by dot product of the normalised
    ``vectors``), itself and rows of its ``groups`` value left out, weighted by ``exp(scale · cosine)``."""
    v = np.asarray(vectors, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    g = np.asarray(groups if groups is not None else np.arange(len(y)), dtype=np.int64)
    n = len(y)
    classes = int(y.max()) + 1 if n else 0
    own, top, top_share = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n)
    k = max(1, min(k, n - 1)) if n > 1 else 0
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        sims = v[rows] @ v.T
        sims[g[rows][:, None] == g[None, :]] = -np.inf  # itself and its near-duplicates do not vote
        if not k:
            continue
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near_sims = np.take_along_axis(sims, nearest, axis=1)
        weights = np.where(np.isfinite(near_sims), np.exp(scale * (np.nan_to_num(near_sims, neginf=-1.0) - 1)), 0.0)
        votes = np.zeros((len(rows), classes))
        np.add.at(votes, (np.repeat(np.arange(len(rows)), k), y[nearest].reshape(-1)), weights.reshape(-1))
        totals = votes.sum(axis=1)
        shares = np.divide(votes, totals[:, None], out=np.zeros_like(votes), where=totals[:, None] > 0)
        own[rows] = shares[np.arange(len(rows)), y[rows]]
        top[rows] = shares.argmax(axis=1)
        top_share[rows] = shares.max(axis=1)
    return Votes(own, top, top_share)


def suspects(votes: Votes, labels, *, min_share: float = 0.5) -> list[int]:
    """Rows whose neighbours mostly carry another label (its share ``min_share`` or more, and more than their
    own label's), least supported first."""
    y = np.asarray(labels, dtype=np.int64)
    rows = np.flatnonzero((votes.top != y) & (votes.top_share >= min_share) & (votes.top_share > votes.own_share))
    return [int(i) for i in rows[np.lexsort((-votes.top_share[rows], votes.own_share[rows]))]]
