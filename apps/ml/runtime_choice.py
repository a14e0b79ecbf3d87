"""Which runtime serves a model on this machine, decided once with evidence. No Django here.

Every candidate of ``apps.ml.backends`` that this machine can run is

1. judged on real images: the model version's validation images, decoded and normalised exactly as
   ``Predictor.predict_many`` does (the eval geometry), run through the candidate and through eager PyTorch
   fp32. A candidate is allowed only if its top-1 answer agrees with eager fp32 on at least 99% of them
   and its accuracy is within 0.5 points of eager's. A probability bound on random noise would refuse
   bf16 and int8 for no measured reason and prove nothing about real pictures;
2. timed: forward milliseconds at batch 1 (single-request threads) and batch 10 (batch threads), in
   interleaved rounds, medians;

and the fastest allowed one is chosen, by batch-1 latency plus batch-10 time per image. A reduced-precision
runtime (bf16, int8, fp16) must beat the fastest fp32 one by ``PREFER_EXACT_MARGIN`` to be chosen: a smaller
gain is within timing noise and not worth any change in answers.

The int8 graph is calibrated on the version's own training images (same geometry) and cached, stamped with
the digest of the weights and of the calibration batches, so any process can remake the same file.
"""
from __future__ import annotations

import datetime
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from . import backends
from .backends import CANDIDATES, PRECISION, REFERENCE, Unavailable
from .images import ImageRejected
from .machine import machine_fingerprint

logger = logging.getLogger(__name__)

MIN_AGREEMENT = 0.99  # top-1 agreement with eager fp32 on validation images
MAX_ACCURACY_DELTA = 0.005  # |accuracy - eager fp32 accuracy|, as a fraction (0.5 points)
PREFER_EXACT_MARGIN = 0.10
GUARD_BATCH = 10
TIMING_BATCH = 10

# choose_runtime calls in this process: a test reads it (a recorded choice is loaded without re-timing).
measurements = 0

Blob = bytes | Callable[[], bytes]  # the bytes, or a function that reads them (lazily, one at a time)


def _read(blob: Blob) -> bytes:
    return blob() if callable(blob) else blob


def _chunks(items: Iterable, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decoded_batches(predictor, blobs: Iterable[Blob], labels: Iterable[int] | None, size: int):
    """(normalised batch, labels kept, files rejected) per chunk: ``predict_many``'s path."""
    pairs = zip(blobs, labels, strict=True) if labels is not None else ((blob, -1) for blob in blobs)
    for chunk in _chunks(pairs, size):
        crops, kept, rejected = [], [], 0
        for blob, label in chunk:
            try:
                crops.append(predictor.decode(_read(blob)))
                kept.append(label)
            except ImageRejected:
                rejected += 1
        yield (predictor.normalize(crops) if crops else None), kept, rejected


def calibration_batches(predictor, blobs: Iterable[Blob], *, size: int = 8) -> list[np.ndarray]:
    return [batch for batch, _, _ in _decoded_batches(predictor, blobs, None, size) if batch is not None]


def ensure_int8(predictor, calibration: Iterable[Blob], path: Path) -> dict:
    """The int8 graph of ``predictor``'s weights calibrated on ``calibration`` at ``path`` (the cached file
    when its stamp matches, else quantised now); sets ``predictor.int8_path``. ``Unavailable`` without
    calibration images or quantisation tools."""
    started = time.perf_counter()
    batches = calibration_batches(predictor, calibration)
    images = sum(len(b) for b in batches)
    if not batches:
        raise Unavailable("no calibration images (the version has no training images to calibrate int8 with)")
    stamp = backends.calibration_stamp(predictor.weights_stamp, backends.batches_digest(batches))
    made = backends.onnx_stamp(path) != stamp
    if made:
        backends.quantize_int8(predictor.fp32_graph(), path, batches, stamp=stamp)
    predictor.int8_path = Path(path)
    return {"path": str(path), "stamp": stamp, "calibration_images": images, "quantised_now": made,
            "seconds": round(time.perf_counter() - started, 2)}


def judge(reference: np.ndarray, candidate: np.ndarray, labels: Sequence[int], split: str = "val") -> dict:
    """Top-1 agreement with the reference, both accuracies and whether the guard allows the candidate,
    with the numbers in the reason when it does not (``split``: which images, for the reason)."""
    y = np.asarray(labels)
    count = len(y)
    ref_top, top = reference.argmax(1), candidate.argmax(1)
    agreement = float((ref_top == top).mean())
    ref_accuracy, accuracy = float((ref_top == y).mean()), float((top == y).mean())
    delta = accuracy - ref_accuracy
    problems = []
    if agreement < MIN_AGREEMENT:
        problems.append(f"its top-1 agrees with eager fp32 on {agreement:.2%} of {count} {split} images "
                        f"(at least {MIN_AGREEMENT:.0%} needed)")
    if abs(delta) > MAX_ACCURACY_DELTA + 1e-12:
        problems.append(f"its accuracy is {accuracy:.2%} against eager fp32's {ref_accuracy:.2%} "
                        f"({delta * 100:+.2f} points; within ±{MAX_ACCURACY_DELTA * 100:.1f} needed)")
    return {"agreement": round(agreement, 6), "accuracy": round(accuracy, 6), "reference_accuracy": round(ref_accuracy, 6),
            "accuracy_delta_points": round(delta * 100, 3), "allowed": not problems,
            "reason": "refused: " + "; and ".join(problems) if problems else
            f"top-1 agreement {agreement:.2%}, accuracy {delta * 100:+.2f} points on {count} {split} images"}


def _time(candidates: dict, single: np.ndarray, batch: np.ndarray, rounds: int, seed: int = 0) -> dict:
    """Median forward ms at batch 1 and at batch len(batch) per candidate, interleaved over rounds."""
    samples = {name: ([], []) for name in candidates}
    for one, many in candidates.values():  # warm-up: allocations, kernel choice, first compile
        one(single)
        many(batch)
    order = list(candidates)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            one, many = candidates[name]
            for _ in range(5):
                started = time.perf_counter()
                one(single)
                samples[name][0].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            many(batch)
            samples[name][1].append((time.perf_counter() - started) * 1000)
    return {name: (float(np.median(b1)), float(np.median(bn))) for name, (b1, bn) in samples.items()}


def pick(allowed: Sequence[dict], *, reference_score: float) -> tuple[dict, str]:
    """The candidate to serve with among the allowed, timed ones (rows with ``precision`` and ``score_ms``), and
    why: the fastest, except that a reduced-precision one must beat the fastest fp32 one by
    ``PREFER_EXACT_MARGIN``, or the fastest fp32 one serves. ``reference_score``: eager fp32's, for the reason."""
    best = min(allowed, key=lambda row: row["score_ms"])
    best_exact = min((row for row in allowed if row["precision"] == "fp32"), key=lambda row: row["score_ms"])
    if best["precision"] != "fp32" and best["score_ms"] > best_exact["score_ms"] * (1 - PREFER_EXACT_MARGIN):
        return best_exact, (f"{best_exact['name']}: the fastest fp32 runtime; {best['name']} is allowed but less than "
                            f"{PREFER_EXACT_MARGIN:.0%} faster ({best['score_ms']:.2f} vs {best_exact['score_ms']:.2f} ms)")
    return best, (f"{best['name']}: the fastest allowed runtime, {best['score_ms']:.2f} ms (batch-1 latency + "
                  f"batch-10 time per image) against eager fp32's {reference_score:.2f} ms "
                  f"({reference_score / best['score_ms']:.2f}x)")


def choose_runtime(predictor, *, guard: Sequence[tuple[Blob, int]] = (), calibration: Sequence[Blob] = (),
                   int8_path: Path | None = None, candidates: Sequence[str] = CANDIDATES, rounds: int = 5,
                   machine: tuple[str, dict] | None = None, time_refused: bool = False,
                   guard_split: str = "val") -> dict:
    """Judge and time every candidate for ``predictor``'s model on this machine; the record says which one
    to serve with and why, with every candidate's figures (or the reason it was skipped or refused).

    ``guard``: (file, label index) pairs of the version's validation images (or of ``guard_split``); ``calibration``: its training
    images, for int8. ``predictor`` is any ``Predictor`` of the model (its threads are the serving threads).
    Refused candidates are timed too only with ``time_refused`` (the bench shows what a refusal costs).
    """
    global measurements
    measurements += 1
    started = time.perf_counter()
    key, description = machine or machine_fingerprint(threads=predictor.threads,
                                                               batch_threads=predictor.batch_threads)
    rows: dict[str, dict] = {name: {"name": name, "precision": PRECISION[name]} for name in candidates}
    rows.setdefault(REFERENCE, {"name": REFERENCE, "precision": "fp32"})
    int8 = None
    if int8_path is not None and any(PRECISION[name] == "int8" for name in rows):
        try:
            int8 = ensure_int8(predictor, calibration, int8_path)
        except Unavailable as exc:
            int8 = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a quantiser failure skips int8, never the choice
            logger.exception("int8 quantisation failed")
            int8 = {"error": f"quantisation failed: {exc}"}
    built: dict[str, tuple] = {}
    for name, row in rows.items():
        try:
            built[name] = predictor.runtime_pair(name)  # what serving would run: timed as it would serve
        except Unavailable as exc:
            row.update(status="skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot take this graph is skipped, with why
            row.update(status="failed", reason=f"could not load: {exc}")

    # 1. The guard, on the validation images: one decode per image, every candidate on the same batch.
    guard_labels: list[int] = []
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in built}
    rejected = 0
    first_batch = None
    for batch, labels, dropped in _decoded_batches(predictor, (b for b, _ in guard), (y for _, y in guard),
                                                   GUARD_BATCH):
        rejected += dropped
        if batch is None:
            continue
        first_batch = batch if first_batch is None else first_batch
        guard_labels.extend(labels)
        for name in list(outputs):
            try:
                outputs[name].append(predictor.split(built[name][1](batch))[0])  # judged on the logits
            except Exception as exc:  # noqa: BLE001 - a candidate that fails on real input is out
                rows[name].update(status="failed", reason=f"failed on a validation batch: {exc}")
                del outputs[name], built[name]
    reference_accuracy = None
    if guard_labels:
        reference = np.concatenate(outputs[REFERENCE])
        for name in list(outputs):
            verdict = judge(reference, np.concatenate(outputs[name]), guard_labels, guard_split)
            reference_accuracy = verdict.pop("reference_accuracy")
            allowed = verdict.pop("allowed")
            rows[name].update(status="allowed" if allowed else "refused", **verdict)
    else:
        for name in built:
            if PRECISION[name] == "fp32":
                rows[name].update(status="allowed", reason="fp32, the same graph; no validation images to compare on")
            else:
                rows[name].update(status="refused", reason="refused: no validation images to judge a "
                                  f"{PRECISION[name]} runtime on")

    # 2. Speed, of the allowed candidates (and the refused ones when asked: what a refusal costs).
    if not time_refused:
        built = {name: pair for name, pair in built.items() if rows[name]["status"] == "allowed"}
    size = predictor.input_size
    if first_batch is None:
        first_batch = np.random.default_rng(0).standard_normal((TIMING_BATCH, 3, size, size), dtype=np.float32)
    batch = np.concatenate([first_batch] * (TIMING_BATCH // len(first_batch) + 1))[:TIMING_BATCH]
    timings = _time(built, batch[:1], batch, rounds) if built else {}
    for name, (b1, bn) in timings.items():
        rows[name].update(ms_b1=round(b1, 3), ms_b10=round(bn, 3), per_image_ms_b10=round(bn / TIMING_BATCH, 3),
                          score_ms=round(b1 + bn / TIMING_BATCH, 3))

    # 3. The choice.
    chosen, why = pick([row for row in rows.values() if row.get("status") == "allowed" and "score_ms" in row],
                       reference_score=rows[REFERENCE]["score_ms"])
    chosen["status"] = "chosen"
    return {
        "key": key, "machine": description, "chosen": chosen["name"], "why": why,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 2), "validation_images": len(guard_labels),
        "guard_split": guard_split,
        "rejected_images": rejected, "reference_accuracy": reference_accuracy,
        "guard": {"min_agreement": MIN_AGREEMENT, "max_accuracy_delta_points": MAX_ACCURACY_DELTA * 100},
        "int8": int8, "candidates": [rows[name] for name in rows],
    }
