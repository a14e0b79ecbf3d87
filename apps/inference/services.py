"""Every state change of the inference app."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import re
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.core.api import ServiceError
from apps.core.queue import enqueue
from apps.ml.calibration import logits_of, temperature_report
from apps.ml.digests import file_sha256
from apps.ml.gallery import fit_scale_on

from .gallery import GALLERY_TASK
from .loading import int8_graph_path, machine_key, predictor_cache, serving_options
from .models import AliasChange, ModelAlias, ModelAvailability, ModelVersion
from .selectors import calibration_images, guard_images, model_resolve, temperature_images

logger = logging.getLogger(__name__)

ALIAS_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")


@transaction.atomic
def model_version_register(
    *,
    name: str,
    architecture: str,
    labels: list[str],
    input_size: int,
    normalization: dict,
    artifact: Path,
    parameters: int = 0,
    metrics: dict | None = None,
    dataset_version=None,
    training_job_id: int | None = None,
    notes: str = "",
    calibration: dict | None = None,
) -> ModelVersion:
    """Register a serving artifact (which must live under KYARA_DATA_DIR/artifacts) as a model version."""
    artifact = Path(artifact).resolve()
    root = Path(settings.ARTIFACTS_DIR).resolve()
    if not artifact.is_file():
        raise ServiceError("artifact_missing", f"No artifact at {artifact}.")
    try:
        relative = artifact.relative_to(root)
    except ValueError:
        raise ServiceError("artifact_outside", f"The artifact must live under {root}.") from None
    if not labels:
        raise ServiceError("no_labels", "A model version needs its class labels.")
    version = ModelVersion.objects.create(
        name=name,
        architecture=architecture,
        labels=list(labels),
        input_size=input_size,
        normalization=normalization,
        artifact=relative.as_posix(),
        artifact_sha256=file_sha256(artifact),
        size_bytes=artifact.stat().st_size,
        parameters=parameters,
        metrics=metrics or {},
        dataset_version=dataset_version,
        training_job_id=training_job_id,
        notes=notes,
        calibration=dict(calibration or {}),
    )
    if settings.KYARA_RUNTIME_CHOOSE_ON_REGISTER:  # the serving runtime, measured by a worker (its machine)
        transaction.on_commit(lambda: enqueue("apps.inference.tasks.model_version_runtime_choose", version.pk,
                                              group=f"runtime-{version.pk}"))
    return version


@transaction.atomic
def model_version_threshold_set(*, version_id: int, threshold: float, overwrite: bool = True) -> bool:
    """Set the open-set confidence threshold; with ``overwrite=False`` only where none is set yet (a
    threshold someone chose by hand is kept). Returns whether it changed. Saved through the model so
    every process's alias cache hears of it."""
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    if version.confidence_threshold is not None and not overwrite:
        return False
    version.confidence_threshold = threshold
    version.save(update_fields=["confidence_threshold", "updated_at"])
    return True


def model_version_calibrate(*, version: ModelVersion, split: str = "val", images: int | None = None) -> dict:
    """Fit the version's temperature on ``split`` of its dataset version, through the serving path (the
    predictor's raw probabilities), and store it with the evidence. The refit recipe has trained on val, so
    a refit model can only be calibrated on a split it did not see (``test``, which spends it: say so)."""

    seen = {"train"} | ({"val"} if (version.calibration or {}).get("inherited_by_refit") else set())
    if split in seen:
        raise ServiceError("seen_split", f"{version.name} trained on its {split} images; a temperature must be "
                           "fitted on images it did not train on (use --split test, or val for a model that "
                           "was not refit).", field="split")
    pairs = temperature_images(version, split, images)
    if not pairs:
        raise ServiceError("no_images", f"{version.name} has no {split} images of its classes to calibrate on.",
                           field="split")
    predictor = predictor_cache.get(version).predictor
    done = predictor.predict_many((read() for read, _ in pairs), batch_size=settings.KYARA_EVAL_BATCH_SIZE, raw=True)
    labels = [pairs[i][1] for i in done.kept]
    report = temperature_report(logits_of(done.probabilities), labels, split=split,
                                bins=settings.KYARA_EVAL_CALIBRATION_BINS)
    mapping = fit_scale_on(predictor, temperature_images(version, "train"), pairs,
                             batch_size=settings.KYARA_EVAL_BATCH_SIZE)
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        before = locked.calibration or {}
        locked.calibration = {**report, "fitted_by": "calibrate", "previous": before.get("temperature"),
                              "inherited_by_refit": before.get("inherited_by_refit", False), "gallery": mapping}
        locked.save(update_fields=["calibration", "updated_at"])
    return locked.calibration


@transaction.atomic
def model_version_metrics_record(*, version_id: int, numbers: dict) -> ModelVersion:
    """Merge ``numbers`` into the version's metrics (the promotion gate reads ``metrics["accuracy"]``);
    keys written by others (training) stay."""
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    version.metrics = {**(version.metrics or {}), **numbers}
    version.save(update_fields=["metrics", "updated_at"])
    return version


def _metric_value(metrics: dict, dotted: str):
    """``accuracy`` or a dotted path such as ``test.accuracy`` inside a version's metrics."""
    value = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def promotion_gate_check(*, alias: str, version: ModelVersion) -> None:
    """The optional gate: a gated alias only points at versions whose evaluation reaches the minimum."""
    minimum = settings.KYARA_PROMOTION_MIN
    if minimum < 0 or alias not in settings.KYARA_PROMOTION_GATED_ALIASES:
        return
    metric = settings.KYARA_PROMOTION_METRIC
    value = _metric_value(version.metrics or {}, metric)
    if value is None:
        raise ServiceError("promotion_gate", f"{version.name} has no {metric!r} metric yet; evaluate it before "
                           f"promoting it to {alias!r}, or override the gate with force.", status_code=409)
    if value < minimum:
        raise ServiceError("promotion_gate", f"{version.name} has {metric} {value:.4g}, below the {minimum:.4g} "
                           f"required for {alias!r}; override the gate with force if you must.", status_code=409)


def _ensure_loadable(version: ModelVersion) -> None:
    """Load (and so warm) the version in this process before any alias points at it."""
    predictor_cache.get(version)


def model_alias_set(*, name: str, version, actor=None, why: str = "", force: bool = False) -> AliasChange:
    """Point alias ``name`` at ``version`` (a ModelVersion, or a name: an alias first, then a version name, as
    ``selectors.model_resolve`` reads every name) and record it.

    ``force`` overrides the promotion gate (the change's ``why`` says so). The version is loaded first,
    so a broken artifact is refused and the first request after the promotion finds the model warm in
    this process; other server processes warm it through their alias watcher.
    """
    name = (name or "").strip().lower()
    if not ALIAS_NAME.match(name):
        raise ServiceError("invalid_alias", "An alias is 1-60 lowercase letters, digits, '-' or '_'.")
    target = version if isinstance(version, ModelVersion) else model_resolve(str(version), fresh=True)[0]
    if not force:
        promotion_gate_check(alias=name, version=target)
    elif settings.KYARA_PROMOTION_MIN >= 0 and name in settings.KYARA_PROMOTION_GATED_ALIASES:
        why = f"{why} [promotion gate overridden]".strip()
    return _alias_move(name=name, target=target, actor=actor, why=why, kind=AliasChange.Kind.SET)


def model_alias_rollback(*, name: str, actor=None, why: str = "") -> AliasChange:
    """Undo the alias's last change: point it back at the version it had before (recorded as a change).

    Not gated: it returns to a version that was already serving.
    """
    last = AliasChange.objects.filter(alias=name).select_related("from_version", "to_version").first()
    if last is None:
        raise ServiceError("unknown_alias", f"The alias {name!r} has no history to roll back.", status_code=404)
    if last.from_version is None:
        raise ServiceError("nothing_to_roll_back", f"The alias {name!r} pointed at nothing before "
                           f"{last.to_version}; set it to another version instead.", status_code=409)
    return _alias_move(name=name, target=last.from_version, actor=actor, kind=AliasChange.Kind.ROLLBACK,
                       why=why or f"roll back {last.to_version} to {last.from_version}", expect_last=last.pk)


def _alias_move(*, name: str, target: ModelVersion, actor, why: str, kind: str,
                expect_last: int | None = None) -> AliasChange:
    _ensure_loadable(target)  # outside the transaction: loading takes a while
    user = actor if getattr(actor, "is_authenticated", False) else None
    with transaction.atomic():
        alias = ModelAlias.objects.select_for_update().filter(name=name).first()
        if expect_last is not None:
            latest = AliasChange.objects.filter(alias=name).values_list("pk", flat=True).first()
            if latest != expect_last:
                raise ServiceError("alias_changed", f"The alias {name!r} changed while rolling back; "
                                   "look at its history and try again.", status_code=409)
        previous = alias.version if alias else None
        if alias is None:
            alias = ModelAlias(name=name)
        alias.version = target
        alias.updated_by = user
        alias.save()
        # The version now serving answers through its prototypes: a worker builds its gallery (and embeds the
        # approved images for it) unless curation has not changed since it last did.
        transaction.on_commit(lambda: enqueue(GALLERY_TASK, target.pk, group="gallery"))
        return AliasChange.objects.create(alias=name, from_version=previous, to_version=target, kind=kind,
                                          why=why or "", actor=user)


def model_availability_record(*, version: ModelVersion, available: bool, reason: str = "", backend: str = "") -> None:
    ModelAvailability.objects.update_or_create(
        version=version, defaults={"available": available, "reason": reason[:2000], "backend": backend}
    )


# --- The serving runtime, chosen once per kind of machine ---------------------------------------------

@contextlib.contextmanager
def _machine_lock(path: Path):
    """One process of this machine at a time (the others wait, then find its record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _int8_in_place(version: ModelVersion, record: dict) -> bool:
    """The recorded choice can load here: nothing to check unless it is int8, whose graph this machine's cache
    must hold with the recorded stamp (remade from the same calibration images when it does not)."""
    int8 = record.get("int8") or {}
    if not record["chosen"].endswith("-int8"):
        return True
    from apps.ml import backends

    path = int8_graph_path(version.artifact_sha256)
    if backends.onnx_stamp(path) == int8.get("stamp"):
        return True
    from apps.ml.runtime_choice import ensure_int8

    made = ensure_int8(_reference_predictor(version), calibration_images(version), path)
    if made["stamp"] != int8.get("stamp"):
        logger.warning("%s: the int8 graph remade here differs from the one measured; measuring again", version.name)
        return False
    return True


def _reference_predictor(version: ModelVersion):
    """The version's model as eager fp32, loaded as this process serves (threads, limits, graph caches), not
    warmed: the runtimes it builds are judged and timed against it."""
    from apps.ml.runtime import load_predictor

    return load_predictor(version.artifact_path, expected_sha256=version.artifact_sha256, backend="torch", warm=False,
                          **{**serving_options(), "microbatch": False})


def model_version_runtime_choose(version, *, where: str = "first load", again: bool = False,
                                 time_refused: bool = False, guard_split: str | None = None) -> dict:
    """The runtime ``version`` (a ModelVersion or its id) serves with on this kind of machine, with the
    evidence: the record already on the row when there is one, else every candidate judged on the version's
    validation images and timed now (``apps.ml.runtime_choice``), and the record stored under this machine's
    key. ``again`` measures even when a record exists; ``guard_split`` judges on that split instead (a record
    judged on another split is measured again; None: the record whatever its split, val when measuring);
    ``time_refused`` times the refused candidates too (the bench shows what a refusal costs). One process per
    machine measures at a time.
    """
    if not isinstance(version, ModelVersion):
        version = ModelVersion.objects.get(pk=version)
    key, description = machine_key()

    def recorded() -> dict | None:
        record = (version.runtime_choices or {}).get(key)
        if (record is None or again or guard_split not in (None, record.get("guard_split", "val"))
                or not _int8_in_place(version, record)):
            return None
        return {**record, "source": "recorded"}

    if (record := recorded()) is not None:
        return record
    with _machine_lock(Path(settings.CACHE_DIR) / "runtimes" / f"{version.artifact_sha256}-{key}.lock"):
        version.refresh_from_db(fields=["runtime_choices"])
        if (record := recorded()) is not None:
            return record  # another process measured while this one waited
        from apps.ml.runtime_choice import choose_runtime

        split = guard_split or "val"
        record = choose_runtime(_reference_predictor(version), guard=guard_images(version, split),
                                calibration=calibration_images(version),
                                int8_path=int8_graph_path(version.artifact_sha256),
                                candidates=settings.KYARA_RUNTIME_CANDIDATES, machine=(key, description),
                                time_refused=time_refused, guard_split=split)
        record["where"] = where
        logger.info("%s on %s: %s", version.name, description["cpu"], record["why"])
        model_version_runtime_record(version=version, key=key, record=record)
        return {**record, "source": "measured"}


@transaction.atomic
def model_version_runtime_record(*, version: ModelVersion, key: str, record: dict) -> None:
    """Store one machine's runtime record on the version (others' records stay)."""
    row = ModelVersion.objects.select_for_update().get(pk=version.pk)
    stored = {name: value for name, value in record.items() if name != "source"}  # how this process got it
    row.runtime_choices = {**(row.runtime_choices or {}), key: stored}
    row.save(update_fields=["runtime_choices", "updated_at"])
    version.runtime_choices = row.runtime_choices
