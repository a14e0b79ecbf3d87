"""Every state change of the evaluation app: create and run an evaluation, turn it into a collection plan.

An evaluation predicts every image of a dataset version's split through the inference app's predictor
(the serving path: the same decode, normalisation, backend and threads as ``/predict``), so its speed
numbers are the service's. The class space is the model's labels followed by the split's characters the
model does not know: those are counted wrong (the model cannot output them), and the model's classes the
split lacks keep a row with support 0 (their false positives still count against precision).
"""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from apps.characters.models import Character, DatasetItem, DatasetVersion
from apps.characters.phash import near_pairs
from apps.core.api import ServiceError
from apps.core.jobs import JobWatcher, job_claim, job_finish
from apps.core.queue import enqueue
from apps.inference.gallery import answer_many, approved_embeddings
from apps.inference.models import ModelVersion
from apps.inference.services import model_alias_set, model_version_metrics_record, model_version_threshold_set
from apps.ml import calibration as calibration_math
from apps.ml import metrics
from apps.ml.neighbours import neighbour_votes, suspects

from .models import DEFAULT_TIER_RULES, CharacterResult, EvaluationRun, TierRule
from .selectors import alias_comparison

logger = logging.getLogger(__name__)

RUN_TASK = "apps.evaluation.tasks.run_evaluation"
SPLITS = tuple(DatasetItem.Split.values)
LEAK_EXAMPLES = 50


# --- Creating and running -------------------------------------------------------------------------

def evaluation_run_check(*, dataset_version: DatasetVersion, split: str) -> None:
    """Refuse a split that does not exist or holds no image (forms call it before creating anything)."""
    if split not in SPLITS:
        raise ServiceError("invalid_split", f"The split must be one of {', '.join(SPLITS)}, not {split!r}.")
    if not DatasetItem.objects.filter(version=dataset_version, split=split).exists():
        raise ServiceError("empty_split", f"Dataset version {dataset_version.name!r} has no {split} images; "
                           f"freeze a version with a {split} fraction above 0.")


@transaction.atomic
def evaluation_run_create(
    *, model_version: ModelVersion, dataset_version: DatasetVersion, split: str = "test",
    origin: str = EvaluationRun.Origin.CLI, requested_by=None, training_job_id: int | None = None,
    apply_threshold: bool = False, queue: bool = True,
) -> EvaluationRun:
    """Create a queued run and (after commit) hand it to a worker; ``queue=False`` leaves it to the caller."""
    evaluation_run_check(dataset_version=dataset_version, split=split)
    run = EvaluationRun(
        model_version=model_version, dataset_version=dataset_version, split=split, origin=origin,
        requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
        training_job_id=training_job_id, apply_threshold=apply_threshold,
    )
    run.full_clean()
    run.save()
    if queue:
        transaction.on_commit(lambda: enqueue(RUN_TASK, run.pk, group=f"evaluation-{run.pk}"))
    return run


def evaluation_run_execute(*, run_id: int) -> EvaluationRun | None:
    """Run a queued evaluation here and now. A run already started or finished is left alone (``None``).

    Any failure ends the run as failed with a message a person can act on; it is not raised. A run whose
    worker dies is marked lost by the scheduled sweep (apps.core.jobs) and can be created again.
    """
    run = job_claim(EvaluationRun, run_id)
    if run is None:
        logger.warning("Evaluation %s not run: missing, or no longer queued", run_id)
        return None
    with JobWatcher(run):  # heartbeats through a long prediction pass
        try:
            _execute(run)
        except Exception as exc:  # noqa: BLE001 - the run records every failure
            message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ServiceError):
                logger.exception("Evaluation %s failed", run.pk)
            job_finish(run, status=EvaluationRun.Status.FAILED, error=message[:4000])
    run.refresh_from_db()
    return run


@dataclass
class _SplitRows:
    """One split of a dataset version, in item order, as plain columns."""

    image_ids: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    phash: list[int] = field(default_factory=list)
    posts: list[tuple[str, str]] = field(default_factory=list)
    slugs: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, version: DatasetVersion, split: str) -> _SplitRows:
        rows = cls()
        for values in (DatasetItem.objects.filter(version=version, split=split).order_by("id").values_list(
                "image_id", "image__file", "image__sha256", "image__phash", "image__source_site",
                "image__source_post_id", "character__slug")):
            image_id, name, sha, phash, site, post, slug = values
            rows.image_ids.append(image_id)
            rows.files.append(name)
            rows.sha256.append(sha)
            rows.phash.append(phash)
            rows.posts.append((site, post))
            rows.slugs.append(slug)
        return rows


@dataclass
class _Predictions:
    kept: list[int]  # indexes (into the split rows) of the images that were predicted
    probabilities: np.ndarray  # len(kept) × answers (the classifier's classes, then the gallery's characters)
    rejected: list[dict]
    seconds: float  # decode + forward, file reads excluded
    latencies_ms: list[float]
    labels: list[str]  # the answers' labels, in column order
    sources: list[str]  # per column: classifier or gallery
    stranger: np.ndarray  # per kept image: the chance it shows a character none of the columns is
    stranger_limit: float  # from it on, the answer is "unknown"


def _read(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def _predict(loaded, version: ModelVersion, files: list[str], *, batch_size: int, latency_images: int) -> _Predictions:
    """Probabilities for every file through the serving path (``answer_many``: the predictor in batches like
    ``/predict_batch``, the gallery's characters on the same scale); then the first ``latency_images`` again one
    by one, like ``/predict``."""
    predictor = loaded.predictor
    done = answer_many(loaded, version, (_read(name) for name in files), batch_size=batch_size)
    rejected = [{"file": files[i], "reason": exc.reason, "message": exc.message} for i, exc in done.rejected]
    latencies = []
    for i in done.kept[:max(0, latency_images)]:
        data = _read(files[i])
        began = time.perf_counter()
        predictor.predict([data])
        latencies.append((time.perf_counter() - began) * 1000)
    return _Predictions(done.kept, done.probabilities, rejected, done.seconds, latencies, done.labels, done.sources,
                        done.stranger, done.stranger_limit)


def _device() -> str:
    """The serving runtime's device: the CPU (the predictor runs there), by model name where known."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return f"cpu: {name or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"[:120]


def tier_rules() -> list:
    """The active rules by priority; the default plan while the table holds no rule at all."""
    rules = list(TierRule.objects.all())
    if not rules:
        return [TierRule(**rule) for rule in DEFAULT_TIER_RULES]
    return [rule for rule in rules if rule.active]


def tier_for(accuracy: float | None, rules: list) -> TierRule | None:
    if accuracy is None:
        return None
    return next((rule for rule in rules if rule.matches(accuracy)), None)


def leak_check(*, evaluated: _SplitRows, reference: DatasetVersion, max_distance: int) -> dict:
    """Exact (sha256), near (pHash within ``max_distance``) and same-post duplicates between the evaluated
    images and ``reference``'s training split. ``leaked`` holds the evaluated indexes that leak."""
    train = _SplitRows.load(reference, "train")
    by_sha = {sha: i for i, sha in enumerate(train.sha256)}
    posts = {post: i for i, post in enumerate(train.posts) if post[0] and post[1]}
    examples, exact, near, same_post = [], set(), set(), set()

    def example(kind: str, i: int, j: int, distance: int | None) -> None:
        if len(examples) < LEAK_EXAMPLES:
            examples.append({"kind": kind, "image": evaluated.image_ids[i], "train_image": train.image_ids[j],
                             "character": evaluated.slugs[i], "train_character": train.slugs[j],
                             "distance": distance})

    for i, sha in enumerate(evaluated.sha256):
        if sha in by_sha:
            exact.add(i)
            example("exact", i, by_sha[sha], 0)
    n = len(evaluated.phash)
    for a, b, distance in near_pairs(evaluated.phash + train.phash, max_distance):
        if a < n <= b and a not in exact and a not in near:  # one side evaluated, the other training
            near.add(a)
            example("near", a, b - n, distance)
    for i, post in enumerate(evaluated.posts):
        if post in posts and i not in exact and i not in near:
            same_post.add(i)
            example("same_post", i, posts[post], None)
    leaked = exact | near | same_post
    return {"reference": f"{reference.name}/train", "checked": n, "training_images": len(train.image_ids),
            "max_distance": max_distance, "exact": len(exact), "near": len(near), "same_post": len(same_post),
            "leaked_images": len(leaked), "examples": examples, "leaked": sorted(leaked)}


def _class_space(model_labels: list[str], split_slugs: list[str]) -> list[str]:
    known = set(model_labels)
    return list(model_labels) + sorted({slug for slug in split_slugs if slug not in known})


def _threshold(run: EvaluationRun, loaded, evaluated_conf, evaluated_correct) -> dict:
    """The open-set threshold from the val split of the dataset version the model was trained on (the
    evaluated one when the registry does not say), reusing this run's pass when it *is* that split."""
    reference = run.model_version.dataset_version or run.dataset_version
    keep = settings.KYARA_EVAL_THRESHOLD_KEEP
    if run.split == "val" and reference.pk == run.dataset_version_id:
        confidence, correct = evaluated_conf, evaluated_correct
    else:
        val = _SplitRows.load(reference, "val")
        if not val.files:
            return {"reference": f"{reference.name}/val", "threshold": None,
                    "why": "that split is empty: no threshold suggested"}
        done = _predict(loaded, run.model_version, val.files, batch_size=settings.KYARA_EVAL_BATCH_SIZE,
                        latency_images=0)
        index = {label: i for i, label in enumerate(done.labels)}
        truth = np.array([index.get(val.slugs[i], -1) for i in done.kept])
        correct = done.probabilities.argmax(axis=1) == truth if len(truth) else np.zeros(0, dtype=bool)
        confidence = done.probabilities.max(axis=1) if len(truth) else np.zeros(0)
    suggestion = metrics.suggest_threshold(confidence, correct, keep=keep)
    if suggestion is None:
        return {"reference": f"{reference.name}/val", "threshold": None, "keep": keep,
                "why": "no answer on that split is correct: no threshold suggested"}
    return {"reference": f"{reference.name}/val", **suggestion}


def _threshold_apply(run: EvaluationRun, threshold: float | None) -> str:
    """Set the model version's open-set threshold: always when the run was asked to, otherwise only while
    the version has none (a threshold someone chose by hand is not overwritten)."""
    if threshold is None:
        return "kept"
    changed = model_version_threshold_set(version_id=run.model_version_id, threshold=threshold,
                                          overwrite=run.apply_threshold)
    return "set" if changed else "kept"


def _version_metrics_record(run_id: int) -> bool:
    """Put a test-split run's headline numbers on the model version (``metrics["accuracy"]`` is what the
    promotion gate reads), when the run measured the version on its own dataset version (or the registry
    does not say which one that is)."""
    run = EvaluationRun.objects.select_related("model_version").get(pk=run_id)
    own = run.model_version.dataset_version_id in (None, run.dataset_version_id)
    if run.split != "test" or not own or run.status != EvaluationRun.Status.SUCCEEDED:
        return False
    numbers = {name: getattr(run, name) for name in ("top1", "top5", "mean_per_class_accuracy", "macro_f1", "ece")}
    model_version_metrics_record(version_id=run.model_version_id, numbers={
        "accuracy": run.top1, **numbers, "evaluation_run": run.pk, "leaked_test_images": run.leaks})
    return True


def _execute(run: EvaluationRun) -> None:
    """The stages of a run, in order; the last one writes everything in one transaction."""
    from apps.inference.loading import predictor_cache

    loaded = predictor_cache.get(run.model_version)  # ServiceError (503) with the reason when it cannot serve
    predictor = loaded.predictor
    rows, done = _predict_split(run, loaded)
    measured = _measure(rows, done, done.labels)
    reference = run.model_version.dataset_version or run.dataset_version
    leaks = _leak_stage(run, reference, rows, done, measured)
    threshold = _threshold_stage(run, loaded, measured)
    calibration = _calibration_stage(run, predictor, done, measured)
    open_set = _open_set_stage(run, rows, done, measured, threshold)
    speed = _speed(done, predictor)
    notes = _notes(run, reference, measured.labels, done.labels, rows, done, leaks)
    results = _character_rows(run, measured, predictor.labels, dict(zip(done.labels, done.sources, strict=True)))
    issues, withheld = _label_issue_stage(run)
    if issues:
        notes.append(f"{len(issues)} approved image(s) carry a label their nearest neighbours contradict "
                     "(label_issues): review them.")
    if withheld:
        notes.append(withheld)
    if _record(run, measured=measured, leaks=leaks, threshold=threshold, speed=speed, notes=notes,
               results=results, label_issues=issues, calibration=calibration, open_set=open_set):
        _version_metrics_record(run.pk)


@dataclass
class _Measured:
    """The metrics of one pass, over the class space (the model's labels, then the split's unknowns)."""

    labels: list[str]
    result: dict  # apps.ml.metrics.evaluate_probabilities
    correct: np.ndarray  # per kept image: top-1 right


def _predict_split(run: EvaluationRun, loaded) -> tuple[_SplitRows, _Predictions]:
    """Stage 1: every image of the evaluated split through the serving predictor."""
    rows = _SplitRows.load(run.dataset_version, run.split)
    if not rows.files:
        raise ServiceError("empty_split", f"{run.dataset_version.name} has no {run.split} images.")
    done = _predict(loaded, run.model_version, rows.files, batch_size=settings.KYARA_EVAL_BATCH_SIZE,
                    latency_images=settings.KYARA_EVAL_LATENCY_IMAGES)
    if not done.kept:
        raise ServiceError("nothing_predicted", f"None of the {len(rows.files)} images could be decoded; "
                           f"first refusal: {done.rejected[0]['message'] if done.rejected else '?'}")
    return rows, done


def _measure(rows: _SplitRows, done: _Predictions, model_labels) -> _Measured:
    """Stage 2: the metrics, with the split's characters the model does not know counted wrong."""
    labels = _class_space(list(model_labels), rows.slugs)
    column = {label: i for i, label in enumerate(labels)}
    y_true = np.array([column[rows.slugs[i]] for i in done.kept], dtype=np.int64)
    probabilities = np.zeros((len(done.kept), len(labels)), dtype=np.float64)
    probabilities[:, :done.probabilities.shape[1]] = done.probabilities
    result = metrics.evaluate_probabilities(y_true, probabilities, bins=settings.KYARA_EVAL_CALIBRATION_BINS,
                                            pairs=settings.KYARA_EVAL_CONFUSED_PAIRS)
    return _Measured(labels, result, np.asarray(result["predicted"]) == y_true)


def _leak_stage(run: EvaluationRun, reference: DatasetVersion, rows: _SplitRows, done: _Predictions,
                measured: _Measured) -> dict:
    """Stage 3: the leak check against the model's training split, and the accuracy without the leaks."""
    if run.split == "train" and reference.pk == run.dataset_version_id:
        return {"reference": f"{reference.name}/train", "skipped": "the evaluated split is the training split"}
    leaks = leak_check(evaluated=rows, reference=reference, max_distance=settings.KYARA_NEAR_DUPLICATE_DISTANCE)
    leaked = set(leaks.pop("leaked"))
    clean = [k for k, i in enumerate(done.kept) if i not in leaked]
    leaks["accuracy_without_leaks"] = float(measured.correct[clean].mean()) if clean else None
    return leaks


def _threshold_stage(run: EvaluationRun, loaded, measured: _Measured) -> dict:
    """Stage 4: the open-set threshold suggested on val, set on the model version where it may be."""
    threshold = _threshold(run, loaded, np.asarray(measured.result["confidence"]), measured.correct)
    threshold["model_version_threshold"] = _threshold_apply(run, threshold.get("threshold"))
    return threshold


def _calibration_stage(run: EvaluationRun, predictor, done: _Predictions, measured: _Measured) -> dict:
    """Stage 4b: the same answers before the temperature (``softmax(T · log p)`` undoes it exactly), so the page
    shows ECE and the reliability diagram before and after calibration."""
    temperature = predictor.temperature
    raw = calibration_math.softmax(calibration_math.logits_of(done.probabilities), 1.0 / temperature)
    ece, reliability = metrics.calibration(raw.max(axis=1), measured.correct,
                                           bins=settings.KYARA_EVAL_CALIBRATION_BINS)
    fitted = {key: value for key, value in (run.model_version.calibration or {}).items() if key != "gallery"}
    return {"temperature": temperature, "fitted": fitted,
            "ece_uncalibrated": ece, "reliability_uncalibrated": reliability}


def _open_set_stage(run: EvaluationRun, rows: _SplitRows, done: _Predictions, measured: _Measured,
                    threshold: dict) -> dict:
    """Stage 4c: how well the top-1 confidence tells images of characters the model answers for (its classes
    and its gallery's) from the split's others, and the share answered ``unknown`` among each, at the version's
    threshold (else the one this run suggests). Nothing to measure when the split holds no such others."""
    answerable = set(done.labels)
    known = np.array([rows.slugs[i] in answerable for i in done.kept], dtype=bool)
    limit = run.model_version.confidence_threshold
    if limit is None:
        limit = threshold.get("threshold")
    report = metrics.open_set(np.asarray(measured.result["confidence"]), known, threshold=limit,
                              stranger=done.stranger, stranger_limit=done.stranger_limit)
    if not report["unseen_images"]:
        report["why"] = "every character of the split is answered by the model: no unseen images to compare"
    return report


def _speed(done: _Predictions, predictor) -> dict:
    batched = done.seconds and len(done.kept) / done.seconds
    return {"batch_size": settings.KYARA_EVAL_BATCH_SIZE, "batched_images_per_second": batched,
            "single": metrics.latency_summary(done.latencies_ms), "backend": predictor.backend_name,
            "threads": settings.KYARA_INFERENCE_THREADS,
            "what": "decode + preprocess + forward from the image bytes, as /predict; file reads excluded"}


def _character_rows(run: EvaluationRun, measured: _Measured, model_labels, sources: dict[str, str]) -> list[CharacterResult]:
    """Stage 5: one row per character of the class space, tiered by the rules (low support: provisional)."""
    labels = measured.labels
    characters = {c.slug: c for c in Character.objects.filter(slug__in=labels)}
    model_labels = set(model_labels)
    rules, min_support = tier_rules(), settings.KYARA_EVAL_MIN_SUPPORT
    results = []
    for label, row in zip(labels, measured.result["per_class"], strict=True):
        low = 0 < row["support"] < min_support
        rule = tier_for(row["accuracy"], rules)
        mistaken = row["mistaken_for"]
        results.append(CharacterResult(
            run=run, character=characters.get(label), label=label, support=row["support"],
            predicted=row["predicted"], correct=row["correct"], accuracy=row["accuracy"],
            precision=row["precision"], recall=row["recall"], f1=row["f1"],
            mistaken_for=labels[mistaken] if mistaken is not None else "", mistaken_count=row["mistaken_count"],
            in_model=label in model_labels, source=sources.get(label, ""), in_split=row["support"] > 0, low_support=low,
            tier=None if low or rule is None else rule.priority, tier_name="" if low or rule is None else rule.name,
            provisional_tier=rule.priority if rule else None, target=rule.images if rule else 0,
        ))
    return results


def _label_issue_stage(run: EvaluationRun) -> tuple[list[dict], str]:
    """Stage 6: suspect labels over the whole approved set, training images included (where a wrong label does
    its harm), from out-of-sample evidence: each image's nearest neighbours by the model's embedding, itself and
    its near-duplicates left out, vote on its character (``apps.ml.neighbours``). Most suspect first.

    The list is shown only when the embedding can judge: when the neighbours' majority is the image's own label
    for at least ``KYARA_SUSPECT_MIN_AGREEMENT`` of the approved images. Below that, a contradiction says more
    about the model's confusion than about the label, and the note says so instead."""
    labelled = approved_embeddings(run.model_version)
    if len(labelled.image_ids) < 2:
        return [], ""
    names = sorted(set(labelled.slugs))
    index = {slug: i for i, slug in enumerate(names)}
    labels = [index[slug] for slug in labelled.slugs]
    scale = float(((run.model_version.calibration or {}).get("gallery") or {}).get("scale", 10.0))
    votes = neighbour_votes(labelled.vectors, labels, labelled.groups, k=settings.KYARA_SUSPECT_NEIGHBOURS, scale=scale)
    if votes.agreement < settings.KYARA_SUSPECT_MIN_AGREEMENT:
        return [], (f"Suspect labels are not listed: the neighbours of only {votes.agreement:.0%} of the "
                    f"{len(labels)} approved images agree with their label (at least "
                    f"{settings.KYARA_SUSPECT_MIN_AGREEMENT:.0%} needed before a contradiction means a wrong label).")
    rows = suspects(votes, labels)[:settings.KYARA_SUSPECT_MAX]
    return [{"image": labelled.image_ids[i], "label": labelled.slugs[i], "predicted": names[votes.top[i]],
             "probability": round(float(votes.top_share[i]), 6), "self_confidence": round(float(votes.own_share[i]), 6)}
            for i in rows], ""


def _record(run: EvaluationRun, *, measured: _Measured, leaks: dict, threshold: dict, speed: dict, notes: list[str],
            results: list[CharacterResult], label_issues: list[dict], calibration: dict, open_set: dict) -> bool:
    """Stage 7: the run's numbers and rows in one transaction, only while this process holds the run."""
    labels, result, single = measured.labels, measured.result, speed["single"]
    pairs = [{"true": labels[p["true"]], "predicted": labels[p["predicted"]], "count": p["count"],
              "share": p["share"]} for p in result["confused_pairs"]]
    with transaction.atomic():
        if not job_finish(
            run, status=EvaluationRun.Status.SUCCEEDED, error="",
            images=result["images"], top1=result["top1"], top5=result["top5"],
            mean_per_class_accuracy=result["mean_per_class_accuracy"], macro_precision=result["macro_precision"],
            macro_recall=result["macro_recall"], macro_f1=result["macro_f1"], ece=result["ece"],
            ece_uncalibrated=calibration["ece_uncalibrated"], calibration=calibration, open_set=open_set,
            suggested_threshold=threshold.get("threshold"), latency_p50_ms=single["p50_ms"],
            latency_p95_ms=single["p95_ms"], images_per_second=speed["batched_images_per_second"] or None,
            device=_device(), backend=speed["backend"], labels=labels, confusion_matrix=result["confusion_matrix"],
            confused_pairs=pairs, reliability=result["reliability"], threshold=threshold, speed=speed,
            leak_report=leaks, notes=notes, label_issues=label_issues,
        ):
            return False
        CharacterResult.objects.filter(run=run).delete()
        CharacterResult.objects.bulk_create(results)
    return True


def _notes(run, reference, labels, model_labels, rows, done, leaks) -> list[str]:
    notes = []
    if leaks.get("leaked_images"):
        notes.append(f"LEAK: {leaks['leaked_images']} of {leaks['checked']} evaluated images have a copy in "
                     f"{leaks['reference']} ({leaks['exact']} exact, {leaks['near']} near, {leaks['same_post']} "
                     "same post); the numbers are optimistic.")
    if reference.pk != run.dataset_version_id:
        notes.append(f"The model was trained on {reference.name}; this run evaluates {run.dataset_version.name}.")
    unknown = labels[len(model_labels):]
    if unknown:
        notes.append(f"{len(unknown)} character(s) of the split are unknown to the model and count as wrong: "
                     f"{', '.join(unknown[:20])}{' …' if len(unknown) > 20 else ''}.")
    gallery = [label for label, source in zip(done.labels, done.sources, strict=True) if source == "gallery"]
    if gallery:
        notes.append(f"{len(gallery)} character(s) have no class in the model and are answered from their approved "
                     f"images (the gallery): {', '.join(gallery[:20])}{' …' if len(gallery) > 20 else ''}.")
    absent = sorted(set(model_labels) - set(rows.slugs))
    if absent:
        notes.append(f"{len(absent)} class(es) of the model have no {run.split} images (support 0, not tiered): "
                     f"{', '.join(absent[:20])}{' …' if len(absent) > 20 else ''}.")
    if done.rejected:
        notes.append(f"{len(done.rejected)} image(s) could not be decoded and were left out; first: "
                     f"{done.rejected[0]['file']} ({done.rejected[0]['message']}).")
    return notes


# --- Collection plans -------------------------------------------------------------------------------

def evaluation_plan_create(*, run: EvaluationRun, requested_by=None, sources: list[str] | None = None,
                           include_low_support: bool = False, solo: bool = True,
                           auto_approve_min_confidence: float | None = None) -> list:
    """Crawl jobs for the run's tiered characters through the crawling app's collection-plan service; ``solo`` and
    ``auto_approve_min_confidence`` pass through to it, and each job records the run (``evaluation_run_id``)."""
    from apps.crawling.services import collection_plan_create

    from .selectors import collection_plan_rows

    if run.status != EvaluationRun.Status.SUCCEEDED:
        raise ServiceError("not_evaluated", f"Evaluation {run.pk} is {run.status}; plan from a succeeded run.",
                           status_code=409)
    rows = [row for row in collection_plan_rows(run=run, sources=sources, include_low_support=include_low_support)
            if row["character_obj"] is not None and row["target"] > 0]
    with transaction.atomic():
        jobs = collection_plan_create(targets=[(row["character_obj"], row["target"]) for row in rows],
                                      requested_by=requested_by, sources=sources, solo=solo,
                                      auto_approve_min_confidence=auto_approve_min_confidence,
                                      evaluation_run_id=run.pk)
        EvaluationRun.objects.filter(pk=run.pk).update(plan={
            "created_at": timezone.now().isoformat(), "jobs": [job.pk for job in jobs],
            "targets": {row["character"]: row["target"] for row in rows},
            "without_source": [row["character"] for row in rows if not row["sources"]],
        })
    return jobs


# --- Promotion ------------------------------------------------------------------------------------

def evaluation_promote(*, run: EvaluationRun, actor=None, alias: str = "default"):
    """Point ``alias`` at the run's model when it beats the alias's current model on the same dataset version and
    split (``selectors.alias_comparison``); the alias move is the inference app's, promotion gate included."""
    comparison = alias_comparison(run, alias=alias)
    if not comparison["beats"]:
        raise ServiceError("not_better", comparison["reason"], status_code=409)
    return model_alias_set(name=alias, version=run.model_version, actor=actor,
                           why=f"evaluation {run.pk}: {comparison['reason']}")
