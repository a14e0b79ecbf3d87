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

import numpy as np

from .calibration import fit_temperature, nll

DEFAULT_MAPPING = {"scale": 10.0}  # until a version's own is fitted


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


def combine(probabilities: np.ndarray, embeddings: np.ndarray, classes: np.ndarray, gallery: np.ndarray, mapping: dict,
            mean: np.ndarray | None = None) -> np.ndarray:
    """``N × (C + G)`` probabilities: the classifier's ``C`` calibrated columns, then the ``G`` gallery characters'.

    ``classes``: ``C × D`` prototypes of the classifier's classes (a zero row for a class without approved
    images: it takes no prototype mass of its own); ``gallery``: ``G × D``; both built from embeddings centred on
    ``mean`` (``class_prototypes``)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if not len(gallery):
        return p.astype(np.float32)
    e = centred(embeddings, mean)
    prototypes = np.concatenate([np.asarray(classes, np.float32), np.asarray(gallery, np.float32)])
    logits = mapping["scale"] * (e @ prototypes.T).astype(np.float64)
    present = np.concatenate([np.abs(classes).sum(1) > 0, np.ones(len(gallery), dtype=bool)])
    logits[:, ~present] = -np.inf
    q = np.exp(log_softmax(logits))
    share = q[:, :p.shape[1]].sum(axis=1, keepdims=True)
    return np.concatenate([share * p, q[:, p.shape[1]:]], axis=1).astype(np.float32)


def fit_scale(embeddings: np.ndarray, labels: Sequence[int], train_embeddings: np.ndarray,
              train_labels: Sequence[int]) -> dict:
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
    return {"scale": round(1.0 / temperature, 6), "fitted": True, "images": int(len(y)),
            "prototype_accuracy": round(float((cosine.argmax(1) == y).mean()), 6),
            "nll": round(nll(cosine, y, temperature), 6),
            "mean": [round(float(x), 6) for x in mean]}  # the centre it was fitted with: the gallery uses it


def fit_mapping_on(predictor, train: Sequence[tuple], heldout: Sequence[tuple], *, batch_size: int = 32) -> dict:
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
