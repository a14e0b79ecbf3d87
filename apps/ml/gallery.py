"""Gallery characters: answered from a few approved images' embeddings, on the classifier's calibrated scale.
numpy only, no Django, no torch.

A character the classifier has no class for is represented by its *prototype*, the normalised mean of its
approved images' embeddings (the CCIP / nearest-class-mean practice), each first *centred* on the mean embedding
of the approved images and normalised again ("CL2N", as SimpleShot does): a CNN's pooled features come after a
ReLU, so every two images are at a high cosine; centred, unrelated images are near 0 and the cosine means
something. Its logit is an affine map
of the cosine between the image's embedding and the prototype, ``alpha · cos + beta``, appended to the
classifier's calibrated log-probabilities, and one softmax ranks classifier classes and gallery characters
together: one scale, one ``unknown`` threshold, one auto-approval rule.

``alpha`` and ``beta`` are fitted per model version on images it did not train on (its val split), by
simulating the situation they serve: a random fifth of the classifier's classes is taken out of the
classifier and put in the gallery (prototypes from the *train* split's embeddings), and the map is the one
that maximises the likelihood of the true labels of val images of both the removed and the kept classes.
Each round builds the moved classes' prototypes from a
few random training images, as a real gallery character has only a few approved images.
The negative log-likelihood is convex in ``(alpha, beta)`` (a log-sum-exp of affine functions), so Newton's
method finds the optimum in a few steps.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_MAPPING = {"alpha": 20.0, "beta": -15.0}  # until a version's own is fitted: cos 0.75 ≈ logit 0


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


def combine(probabilities: np.ndarray, embeddings: np.ndarray, prototypes: np.ndarray, mapping: dict,
            mean: np.ndarray | None = None) -> np.ndarray:
    """``N × (C + G)`` probabilities: the classifier's ``C`` calibrated columns, then the ``G`` gallery characters'
    (``prototypes`` built from embeddings centred on ``mean``, as ``class_prototypes`` does)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if not len(prototypes):
        return p.astype(np.float32)
    cosine = centred(embeddings, mean) @ np.asarray(prototypes, dtype=np.float32).T
    logits = np.concatenate([np.log(np.clip(p, 1e-30, None)), mapping["alpha"] * cosine + mapping["beta"]], axis=1)
    return np.exp(log_softmax(logits)).astype(np.float32)


def _nll_grad_hess(params: np.ndarray, fixed: np.ndarray, cosine: np.ndarray, target: np.ndarray, in_gallery: np.ndarray):
    """NLL of the targets over [fixed logits | alpha·cos + beta], its gradient and Hessian in (alpha, beta).
    ``target`` indexes the concatenated columns; ``in_gallery`` says whether it is a gallery column."""
    alpha, beta = params
    g = alpha * cosine + beta
    logits = np.concatenate([fixed, g], axis=1)
    top = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - top)
    total = e.sum(axis=1, keepdims=True)
    p = e / total
    rows = np.arange(len(target))
    nll = float((np.log(total[:, 0]) + top[:, 0] - logits[rows, target]).mean())
    pg = p[:, fixed.shape[1]:]  # the gallery columns' probabilities
    # d logit_j / d alpha = cos_j, / d beta = 1 for gallery columns; 0 for fixed ones.
    expected_cos, expected_one = (pg * cosine).sum(1), pg.sum(1)
    target_cos = np.where(in_gallery, cosine[rows, np.clip(target - fixed.shape[1], 0, None)], 0.0)
    target_one = in_gallery.astype(np.float64)
    grad = np.array([(expected_cos - target_cos).mean(), (expected_one - target_one).mean()])
    var_cos = (pg * cosine ** 2).sum(1) - expected_cos ** 2
    var_one = expected_one - expected_one ** 2
    cov = (pg * cosine).sum(1) - expected_cos * expected_one
    hess = np.array([[var_cos.mean(), cov.mean()], [cov.mean(), var_one.mean()]])
    return nll, grad, hess


def fit_mapping(log_probs: np.ndarray, embeddings: np.ndarray, labels: Sequence[int], train_embeddings: np.ndarray,
                train_labels: Sequence[int], *, shots: int = 5, gallery_share: float = 0.2, rounds: int = 8,
                seed: int = 0, iterations: int = 30) -> dict:
    """``alpha``, ``beta`` of the gallery's logits, fitted on held-out images (see the module's docstring).

    ``log_probs``: ``N × C`` calibrated log-probabilities of val images; ``embeddings``: theirs; ``labels``: their
    classes; ``train_embeddings`` / ``train_labels``: the train split's, from which each round builds the moved
    classes' prototypes out of ``shots`` random images, as a gallery character has a handful of approved images
    (prototypes of every training image would be cleaner than any real gallery's, and the map too bold).
    ``DEFAULT_MAPPING`` (with ``fitted: False``) when there are too few classes or images to simulate anything."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    train_y = np.asarray(train_labels, dtype=np.int64)
    mean = np.asarray(train_embeddings, dtype=np.float32).mean(axis=0) if len(train_y) else None
    train_e = centred(train_embeddings, mean)
    embeddings = centred(embeddings, mean)
    classes = log_probs.shape[1]
    moved = max(1, int(round(gallery_share * classes)))
    if classes < 3 or len(y) < 4 or len(set(y.tolist())) < 2 or not len(train_y):
        return {**DEFAULT_MAPPING, "fitted": False, "why": "too few classes or images to fit on"}
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(train_y == c) for c in range(classes)}
    problems = []
    for _ in range(rounds):
        gallery = np.sort(rng.choice([c for c in range(classes) if len(by_class[c])], size=min(moved, sum(
            1 for c in range(classes) if len(by_class[c]))), replace=False))
        kept = np.setdiff1d(np.arange(classes), gallery)
        column = np.full(classes, -1)
        column[kept] = np.arange(len(kept))
        column[gallery] = len(kept) + np.arange(len(gallery))
        prototypes = normalise(np.stack([train_e[rng.choice(by_class[c], size=min(shots, len(by_class[c])),
                                                            replace=False)].mean(axis=0) for c in gallery]))
        cosine = (embeddings @ prototypes.T).astype(np.float64)
        problems.append((log_probs[:, kept], cosine, column[y], np.isin(y, gallery)))
    params = np.array([DEFAULT_MAPPING["alpha"], DEFAULT_MAPPING["beta"]])

    def total(at):
        parts = [_nll_grad_hess(at, *problem) for problem in problems]
        return (sum(p[0] for p in parts) / len(parts), sum(p[1] for p in parts) / len(parts),
                sum(p[2] for p in parts) / len(parts))

    nll, grad, hess = total(params)
    start_nll = nll
    for _ in range(iterations):
        try:
            step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        except np.linalg.LinAlgError:
            step = grad
        scale = 1.0
        while scale > 1e-6:  # backtracking: the NLL must go down
            candidate = params - scale * step
            new_nll, new_grad, new_hess = total(candidate)
            if new_nll <= nll:
                break
            scale /= 2
        else:
            break
        converged = abs(nll - new_nll) < 1e-9
        params, nll, grad, hess = candidate, new_nll, new_grad, new_hess
        if converged:
            break
    return {"alpha": float(params[0]), "beta": float(params[1]), "fitted": True, "nll": round(nll, 6),
            "nll_at_default": round(start_nll, 6), "images": int(len(y)), "classes": int(classes), "shots": shots,
            "gallery_share": gallery_share, "rounds": rounds,
            "mean": [round(float(x), 6) for x in mean]}  # the centre the map was fitted with: the gallery uses it


def fit_mapping_on(predictor, train: Sequence[tuple], heldout: Sequence[tuple], *, batch_size: int = 32,
                   temperature: float | None = None) -> dict:
    """``fit_mapping`` for ``predictor``'s model from images: ``train`` and ``heldout`` are ``(bytes or reader,
    class index)`` pairs; prototypes come from ``train``, the fit from ``heldout`` (images the model did not
    train on). Everything goes through the serving path (``Predictor.predict_many``); the classifier's
    probabilities are calibrated with ``temperature`` (default: the predictor's)."""
    def read(blob):
        return blob() if callable(blob) else blob

    seen = predictor.predict_many((read(b) for b, _ in train), batch_size=batch_size, embeddings=True)
    if not len(seen.kept) or not seen.embeddings.shape[1]:
        return {**DEFAULT_MAPPING, "fitted": False, "why": "no training images or no embedding to build prototypes"}
    held = predictor.predict_many((read(b) for b, _ in heldout), batch_size=batch_size, embeddings=True, raw=True)
    labels = [heldout[i][1] for i in held.kept]
    log_probs = log_softmax(np.log(np.clip(held.probabilities, 1e-300, None)) / (temperature or predictor.temperature))
    mapping = fit_mapping(log_probs, held.embeddings, labels, seen.embeddings, [train[i][1] for i in seen.kept])
    return {**mapping, "prototype_images": len(seen.kept)}
