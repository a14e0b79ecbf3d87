"""Gallery characters: answered from a few approved images' embeddings, on the classifier's calibrated scale.
numpy only, no Django, no torch.

Every character with approved images has a *prototype*: the normalised mean of its images' embeddings (the CCIP /
nearest-class-mean practice), each first *centred* on the training images' mean embedding and normalised again
("CL2N", as SimpleShot does: a CNN's pooled features come after a ReLU, so any two images are at a high cosine;
centred, unrelated images are near 0 and the cosine means something).

An image is answered by a *mixture*: a softmax over its scaled cosines to every prototype (the classifier's
classes' and the gallery characters') says how much of the probability goes to each gallery character and how
much to the classifier's classes together; the classifier's calibrated probabilities share out the latter.
Without a gallery character that is exactly the classifier; a character the classifier has no class for wins
when the image is closer to its prototype than to any class's. The scale is a temperature fitted like the
classifier's, on images the model did not train on (val against prototypes of the train split), so both parts
are calibrated and the answer is one distribution: one ``unknown`` threshold, one auto-approval rule.

Measured on a held-out set of sprites (26 base classes, 6 new ones, 5 shots): this mixture named 71% of the new
characters' images against 29% for an affine map of the cosine appended to the classifier's logits (fitted by
moving a fifth of the classes into a simulated gallery: their images had been trained against the other classes,
so the simulated competition was weaker than a real new character meets, and the map came out too timid).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .calibration import fit_temperature, nll

DEFAULT_MAPPING = {"scale": 10.0}  # until a version's own is fitted
STRANGER_LIMIT = 0.5  # at most: an image more likely a stranger than one of the answers is answered "unknown"


def normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def centred(vectors: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Embeddings centred on ``mean`` and normalised again (unchanged without a mean)."""
    v = np.asarray(vectors, dtype=np.float32)
    return v if mean is None or not len(mean) else normalise(v - np.asarray(mean, dtype=np.float32))


def class_prototypes(vectors: np.ndarray, labels: Sequence, mean: np.ndarray | None = None) -> tuple[list, np.ndarray]:
    """(class names in first-seen order, ``K × D`` normalised mean of the centred embeddings per class)."""
    names = list(dict.fromkeys(labels))
    index = {name: i for i, name in enumerate(names)}
    sums = np.zeros((len(names), np.asarray(vectors).shape[1]), dtype=np.float64)
    np.add.at(sums, [index[label] for label in labels], centred(vectors, mean).astype(np.float64))
    return names, normalise(sums)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@dataclass
class Prototypes:
    """Every prototype an answer is weighed against, prepared once per gallery (not per request): the classifier's
    ``classes`` first, in its output order (a zero row for a class without approved images: it takes no
    prototype mass of its own), then the gallery characters'."""

    matrix: np.ndarray  # K × D, float32
    classes: int
    present: np.ndarray  # K, bool

    @classmethod
    def of(cls, classes: np.ndarray, gallery: np.ndarray) -> Prototypes:
        classes = np.asarray(classes, dtype=np.float32)
        gallery = np.asarray(gallery, dtype=np.float32)
        dim = classes.shape[-1] if classes.ndim == 2 else gallery.shape[-1] if gallery.ndim == 2 else 0
        if not dim:
            return cls(np.zeros((0, 0), dtype=np.float32), len(classes), np.zeros(0, dtype=bool))
        matrix = np.ascontiguousarray(np.concatenate([classes.reshape(-1, dim), gallery.reshape(-1, dim)]))
        return cls(matrix, len(classes), np.abs(matrix).sum(axis=1) > 0)

    @property
    def empty(self) -> bool:
        return not self.present.any()


def mixture(embeddings: np.ndarray, prototypes: Prototypes, mapping: dict, mean: np.ndarray | None) -> np.ndarray:
    """``N × (K + 1)``: the softmax over the scaled cosines to the ``K`` prototypes and, last, the background: the
    share no prototype is close enough to claim (``mapping["background"]``, the cosine at which an image is as
    likely a stranger as that prototype's; none without one)."""
    e = centred(embeddings, mean)
    logits = mapping["scale"] * (e @ prototypes.matrix.T).astype(np.float64)
    logits[:, ~prototypes.present] = -np.inf
    background = mapping.get("background")
    column = np.full((len(e), 1), -np.inf if background is None else mapping["scale"] * background)
    return np.exp(log_softmax(np.concatenate([logits, column], axis=1)))


def combine(probabilities: np.ndarray, embeddings: np.ndarray, prototypes: Prototypes, mapping: dict,
            mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(``N × (C + G)`` probabilities: the classifier's ``C`` calibrated columns, then the ``G`` gallery
    characters'; ``N`` stranger probabilities: the background's share, the chance the image shows a character
    none of them is). The answers are shared out as if the image were one of them (the background is left out
    and the rest renormalised), so their calibration does not depend on how many strangers are asked about; the
    stranger probability is calibrated against the fifth of strangers it was fitted with (``fit_background``).
    Prototypes are built from embeddings centred on ``mean`` (``class_prototypes``); without any, the classifier's
    probabilities as they are."""
    p = np.asarray(probabilities, dtype=np.float64)
    if prototypes.empty:
        return p.astype(np.float32), np.zeros(len(p), dtype=np.float32)
    q = mixture(embeddings, prototypes, mapping, mean)
    stranger = q[:, -1]
    known = np.maximum(1.0 - stranger, 1e-300)[:, None]
    share = q[:, :p.shape[1]].sum(axis=1, keepdims=True) / known
    return (np.concatenate([share * p, q[:, p.shape[1]:-1] / known], axis=1).astype(np.float32),
            stranger.astype(np.float32))


def fit_scale(embeddings: np.ndarray, labels: Sequence[int], train_embeddings: np.ndarray,
              train_labels: Sequence[int], *, keep: float = 0.975) -> dict:
    """The prototype softmax's scale (``1 / temperature``) and the centre, fitted on held-out images
    (``embeddings``, ``labels``) against prototypes of the training images; ``DEFAULT_MAPPING`` (``fitted``:
    False) without enough of either."""
    y = np.asarray(labels, dtype=np.int64)
    train_y = np.asarray(train_labels, dtype=np.int64)
    if len(set(y.tolist())) < 2 or len(set(train_y.tolist())) < 2:
        return {**DEFAULT_MAPPING, "fitted": False, "why": "too few classes or images to fit on"}
    mean = np.asarray(train_embeddings, dtype=np.float32).mean(axis=0)
    classes = int(max(y.max(), train_y.max())) + 1
    names, prototypes = class_prototypes(train_embeddings, list(train_y), mean)
    rows = np.zeros((classes, prototypes.shape[1]), dtype=np.float32)
    rows[names] = prototypes
    cosine = centred(embeddings, mean) @ rows.T
    temperature = fit_temperature(cosine, y)
    background = fit_background(cosine, y, 1.0 / temperature)
    # Who is answered "unknown": the stranger probability above which only (1 - keep) of these held-out images of
    # known characters lie, the confidence threshold's rule; 97.5% each, so that the two rules together still keep
    # about 95% of the known images (evaluate's threshold keeps KYARA_EVAL_THRESHOLD_KEEP of the right answers).
    stranger = mixture(embeddings, Prototypes.of(rows, np.zeros((0, rows.shape[1]))),
                       {"scale": 1.0 / temperature, "background": background}, mean)[:, -1]
    limit = float(np.quantile(stranger, keep)) if len(stranger) else STRANGER_LIMIT
    return {"scale": round(1.0 / temperature, 6), "fitted": True, "images": int(len(y)),
            "prototype_accuracy": round(float((cosine.argmax(1) == y).mean()), 6),
            "nll": round(nll(cosine, y, temperature), 6), "background": round(background, 6),
            "stranger_limit": min(STRANGER_LIMIT, round(limit, 6) + 1e-6), "keep": keep,
            "mean": [round(float(x), 6) for x in mean]}  # the centre it was fitted with: the gallery uses it


def fit_background(cosine: np.ndarray, labels: np.ndarray, scale: float, *, share: float = 0.2, rounds: int = 8,
                   seed: int = 0) -> float:
    """The background's cosine, by maximum likelihood with a fifth of the classes left out in turn: their images
    stand in for characters the model does not know (their target is the background), the others' is their own
    class. The NLL is convex in it (a log-sum-exp of an affine function), so a golden-section search finds it."""
    rng = np.random.default_rng(seed)
    classes = cosine.shape[1]
    present = [c for c in range(classes) if (labels == c).any()]
    problems = []
    for _ in range(rounds):
        out = rng.choice(present, size=max(1, int(round(share * len(present)))), replace=False)
        kept = np.setdiff1d(np.arange(classes), out)
        target = np.where(np.isin(labels, out), len(kept), np.searchsorted(kept, labels))
        problems.append((scale * cosine[:, kept], target))

    def loss(level: float) -> float:
        total = 0.0
        for logits, target in problems:
            z = np.concatenate([logits, np.full((len(target), 1), scale * level)], axis=1)
            total -= log_softmax(z)[np.arange(len(target)), target].mean()
        return total / len(problems)

    low, high, ratio = -1.0, 1.0, (5 ** 0.5 - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(40):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return (low + high) / 2


def fit_scale_on(predictor, train: Sequence[tuple], heldout: Sequence[tuple], *, batch_size: int = 32) -> dict:
    """``fit_scale`` for ``predictor``'s model from images: ``train`` and ``heldout`` are ``(bytes or reader,
    class index)`` pairs; prototypes come from ``train``, the fit from ``heldout`` (images the model did not
    train on). Everything goes through the serving path (``Predictor.predict_many``)."""
    def read(blob):
        return blob() if callable(blob) else blob

    seen = predictor.predict_many((read(b) for b, _ in train), batch_size=batch_size, embeddings=True)
    if not len(seen.kept) or not seen.embeddings.shape[1]:
        return {**DEFAULT_MAPPING, "fitted": False, "why": "no training images or no embedding to build prototypes"}
    held = predictor.predict_many((read(b) for b, _ in heldout), batch_size=batch_size, embeddings=True)
    mapping = fit_scale(held.embeddings, [heldout[i][1] for i in held.kept], seen.embeddings,
                        [train[i][1] for i in seen.kept])
    return {**mapping, "prototype_images": len(seen.kept)}
