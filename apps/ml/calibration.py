"""Temperature scaling: confidence that reads as a probability. numpy only, no Django, no torch.

A classifier trained with cross-entropy (and more so with label smoothing, EMA and a refit) gives top-1
probabilities that are not the chance of being right. Temperature scaling (Guo et al. 2017) divides the
logits by one scalar ``T`` fitted by negative log-likelihood on images the model did not train on; the
ranking, so top-1 and every accuracy, is unchanged, and the probabilities become honest.

``T`` is fitted on log-probabilities as well as on logits: ``log softmax(z)`` is ``z`` shifted per row, and
a softmax does not see a per-row shift, so ``softmax(log p / T) = softmax(z / T)``. That lets a caller who
only kept probabilities (the serving path, ``Predictor.predict_many(raw=True)``) fit and apply it.
"""
from __future__ import annotations

import math

import numpy as np

from .metrics import calibration

LOG_T_RANGE = (math.log(0.05), math.log(20.0))  # a temperature outside this says the data is broken, not the model


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to a per-row shift (what temperature scaling needs) from probabilities; a probability that
    underflowed to 0 becomes a very negative logit, not ``-inf``."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, None))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    y = np.asarray(labels, dtype=np.int64)
    return float((log_norm - z[np.arange(y.size), y]).mean())


def fit_temperature(logits: np.ndarray, labels, *, iterations: int = 40) -> float:
    """The ``T`` that minimises the NLL of ``labels`` (golden-section search on ``log T``; the NLL is convex
    in ``1/T``, so unimodal here). ``1.0`` for no images."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not y.size:
        return 1.0
    if z.ndim != 2 or z.shape[0] != y.size:
        raise ValueError(f"logits must be N × K with N = {y.size}, got shape {z.shape}")
    ratio = (math.sqrt(5) - 1) / 2
    low, high = LOG_T_RANGE
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(z, y, math.exp(a)), nll(z, y, math.exp(b))
    for _ in range(iterations):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(z, y, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(z, y, math.exp(b))
    return float(math.exp((low + high) / 2))


def expected_calibration_error(probabilities: np.ndarray, labels, *, bins: int = 15) -> float:
    """ECE of the top-1 confidence over equal-width bins (the same rule as ``metrics.calibration``)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not y.size:
        return 0.0
    return calibration(p.max(axis=1), p.argmax(axis=1) == y, bins=bins)[0]


def temperature_report(logits: np.ndarray, labels, *, split: str, bins: int = 15) -> dict:
    """Fit ``T`` on ``(logits, labels)`` and say what it does there: NLL and ECE before and after."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    temperature = fit_temperature(logits, y)
    return {"temperature": round(temperature, 6), "split": split, "images": int(y.size),
            "nll_before": round(nll(logits, y), 6) if y.size else None,
            "nll_after": round(nll(logits, y, temperature), 6) if y.size else None,
            "ece_before": round(expected_calibration_error(softmax(logits), y, bins=bins), 6),
            "ece_after": round(expected_calibration_error(softmax(logits, temperature), y, bins=bins), 6)}
