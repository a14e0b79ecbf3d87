"""Loading models into this process: the per-process cache of loaded models (a few at a time, least recently
used evicted, thread-safe), the loader the server and the training runner share, the alias warmer.

Nothing here imports torch or a runtime until a model loads (on first use, or when an alias is warmed), so
a ``manage.py`` process that never predicts never pays for them.

Which runtime a version loads with is recorded on the version per kind of machine (``runtime_choices``);
the cache asks ``choose_runtime`` for it, a callback ``InferenceConfig.ready()`` connects to
``services.model_version_runtime_choose`` (it returns the record, measuring only when this kind of
machine has none yet). Availability is written through ``record_availability`` the same way: this module
never imports the services, which import it.

A model version whose artifact is missing, corrupt or does not match the registry is marked unavailable
(with the reason, on ``ModelAvailability``) and answered with a 503; the load is retried after
``KYARA_PREDICTOR_RETRY_SECONDS`` so a restored file is picked up without a restart.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import DatabaseError, connection

from apps.core.api import ServiceError

from .models import ModelAlias, ModelVersion

if TYPE_CHECKING:
    from apps.ml.runtime import Predictor

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version_id: int
    version_name: str
    predictor: Predictor
    characters: dict[str, dict]  # slug → {"slug", "name", "series"}
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict:
        return {"version": self.version_name, "backend": self.predictor.backend_name,
                "labels": len(self.predictor.labels), "loaded_at": self.loaded_at, **self.predictor.info}


def character_info(labels: list[str]) -> dict[str, dict]:
    from apps.characters.models import Character

    info = {slug: {"slug": slug, "name": slug, "series": None} for slug in labels}
    for character in Character.objects.filter(slug__in=labels).select_related("series"):
        info[character.slug] = {"slug": character.slug, "name": character.name,
                                "series": {"slug": character.series.slug, "name": character.series.name}}
    return info


def unavailable(version: ModelVersion, reason: str) -> ServiceError:
    return ServiceError("model_unavailable", f"Model version {version.name} cannot serve: {reason}",
                        status_code=503, version=version.name)


def serving_options() -> dict:
    """How this process serves: threads, limits, micro-batching, caches (all from the settings)."""
    return {"threads": settings.KYARA_INFERENCE_THREADS, "batch_threads": settings.KYARA_INFERENCE_BATCH_THREADS,
            "onnx_cache_dir": settings.CACHE_DIR / "onnx", "max_pixels": settings.KYARA_PREDICT_MAX_PIXELS,
            "min_side": settings.KYARA_PREDICT_MIN_SIDE, "microbatch": settings.KYARA_MICROBATCH,
            "microbatch_window_ms": settings.KYARA_MICROBATCH_WINDOW_MS,
            "microbatch_max": settings.KYARA_MICROBATCH_MAX}


def int8_graph_path(artifact_sha256: str):
    """Where this machine keeps a version's int8 graph (stamped: ``runtime_choice.ensure_int8`` remakes it)."""
    return settings.CACHE_DIR / "runtimes" / f"{artifact_sha256}-int8.onnx"


def machine_key() -> tuple[str, dict]:
    """This kind of machine's key in ``ModelVersion.runtime_choices`` (no torch: a page can call it)."""
    from apps.ml.machine import machine_fingerprint

    return machine_fingerprint(threads=settings.KYARA_INFERENCE_THREADS,
                               batch_threads=settings.KYARA_INFERENCE_BATCH_THREADS)


def load_serving_predictor(path, *, expected_sha256: str | None = None, runtime: dict | None = None,
                           warm: bool = True, temperature: float | None = None) -> Predictor:
    """An artifact loaded exactly as the server loads it (threads, limits, micro-batching from the settings).

    ``runtime``: the version's record for this machine (``runtime_choices[key]``): the chosen runtime, and
    the int8 graph when that is the choice; loaded without timing anything. Without one (an artifact not
    registered yet, as the training runner measures a new model's test accuracy) the runtime is
    ``KYARA_INFERENCE_BACKEND``: ``auto`` is fp32 (ONNX Runtime, else eager PyTorch), the model's own
    answers; a reduced-precision choice is only ever made with the guard's evidence.
    ``temperature``: the registry's calibration (else the artifact's own).
    """
    from apps.ml.runtime import load_predictor

    backend = settings.KYARA_INFERENCE_BACKEND
    if runtime and backend == "auto":
        backend = runtime["chosen"]
    int8_path = int8_graph_path(expected_sha256) if expected_sha256 and backend.endswith("-int8") else None
    predictor = load_predictor(path, expected_sha256=expected_sha256, backend=backend, int8_path=int8_path,
                               warm_sizes=(settings.KYARA_PREDICT_BATCH_MAX, settings.KYARA_EVAL_BATCH_SIZE),
                               warm=warm, temperature=temperature, **serving_options())
    if runtime:
        predictor.info["runtime"] = {"chosen": runtime["chosen"], "key": runtime.get("key"),
                                     "measured_at": runtime.get("measured_at"), "source": runtime.get("source")}
    return predictor


class PredictorCache:
    def __init__(self) -> None:
        self.choose_runtime: Callable[[ModelVersion], dict | None] | None = None  # set by connect()
        self.record_availability: Callable[..., None] | None = None
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._load_locks: dict[tuple, threading.Lock] = {}
        self._failures: dict[tuple, tuple[float, str]] = {}

    def connect(self, *, choose_runtime: Callable[[ModelVersion], dict | None],
                record_availability: Callable[..., None]) -> None:
        """The callbacks into the services (injected: the services import this module)."""
        self.choose_runtime = choose_runtime
        self.record_availability = record_availability

    def _record(self, version: ModelVersion, **state) -> None:
        """Availability is bookkeeping for /models and the admin: a busy database must not fail a load."""
        if self.record_availability is None:
            return
        try:
            self.record_availability(version=version, **state)
        except DatabaseError as exc:
            logger.warning("Could not record the availability of %s: %s", version.name, exc)

    @staticmethod
    def key(version: ModelVersion) -> tuple:
        # The sha and the path are part of the key: a re-registered artifact never reuses a stale model; so is
        # the temperature: a version calibrated again answers with the new one in every process.
        return (version.pk, version.artifact_sha256, version.artifact, version.temperature)

    def peek(self, version: ModelVersion) -> LoadedModel | None:
        with self._lock:
            return self._entries.get(self.key(version))

    def get(self, version: ModelVersion) -> LoadedModel:
        """The loaded model for ``version``, loading it once (concurrent callers wait for that one load)."""
        key = self.key(version)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            failure = self._failures.get(key)
            if failure and time.monotonic() - failure[0] < settings.KYARA_PREDICTOR_RETRY_SECONDS:
                raise unavailable(version, failure[1])
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    return entry
            entry = self._load(version, key)
            with self._lock:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > max(1, settings.KYARA_PREDICTOR_CACHE_SIZE):
                    evicted_key, evicted = self._entries.popitem(last=False)
                    logger.info("Predictor cache: evicted %s", evicted.version_name)
                self._load_locks.pop(key, None)
                self._failures.pop(key, None)
            return entry

    def _runtime(self, version: ModelVersion) -> dict | None:
        """The version's runtime record for this machine (measured now when there is none); ``None`` (fp32)
        when the choice cannot be made. A broken artifact raises: the load must fail with its reason."""
        from apps.ml.artifacts import ArtifactError

        if self.choose_runtime is None or settings.KYARA_INFERENCE_BACKEND != "auto":
            return None
        try:
            return self.choose_runtime(version)
        except (ArtifactError, ServiceError):
            raise
        except Exception:  # noqa: BLE001 - serving in fp32 beats not serving
            logger.exception("Choosing the runtime of %s failed; serving it in fp32", version.name)
            return None

    def _load(self, version: ModelVersion, key: tuple) -> LoadedModel:
        from apps.ml.artifacts import ArtifactError

        try:
            predictor = load_serving_predictor(version.artifact_path, expected_sha256=version.artifact_sha256,
                                               runtime=self._runtime(version), temperature=version.temperature)
            if list(predictor.labels) != list(version.labels):
                raise ArtifactError(f"the artifact's {len(predictor.labels)} labels differ from the registry's "
                                    f"{len(version.labels)}; re-register the artifact.")
        except Exception as exc:  # noqa: BLE001 - any broken artifact makes the version unavailable, never a 500
            reason = str(exc) if isinstance(exc, ArtifactError) else f"loading failed: {exc}"
            if not isinstance(exc, ArtifactError):
                logger.exception("Loading model version %s failed", version.name)
            with self._lock:
                self._failures[key] = (time.monotonic(), reason)
                self._load_locks.pop(key, None)
            self._record(version, available=False, reason=reason)
            raise unavailable(version, reason) from None
        entry = LoadedModel(version.pk, version.name, predictor, character_info(predictor.labels))
        self._record(version, available=True, backend=predictor.backend_name)
        logger.info("Loaded model version %s (%s)", version.name, predictor.info)
        return entry

    def describe(self) -> list[dict]:
        with self._lock:
            return [entry.describe() for entry in self._entries.values()]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._failures.clear()
            self._load_locks.clear()


predictor_cache = PredictorCache()


class AliasWatcher:
    """Per-process thread that warms what the warm aliases point at, so a promotion made elsewhere (another
    worker, ``manage.py set_alias``) does not make this process's first request slow. Started lazily by
    the first prediction; off when ``KYARA_ALIAS_WATCH_SECONDS`` is 0."""

    def __init__(self) -> None:
        self._started = False
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        interval = getattr(settings, "KYARA_ALIAS_WATCH_SECONDS", 5)
        if self._started or interval <= 0:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
            threading.Thread(target=self._run, args=(interval,), name="kyara-alias-watcher", daemon=True).start()

    def _run(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            try:
                self.warm_once()
            except Exception:  # noqa: BLE001 - a watcher must never die
                logger.exception("Alias watcher failed")
            finally:
                connection.close()  # hold no connection between polls (a test database can then be dropped)

    @staticmethod
    def warm_once() -> None:
        names = getattr(settings, "KYARA_WARM_ALIASES", ["default"])
        for alias in ModelAlias.objects.select_related("version").filter(name__in=names):
            if predictor_cache.peek(alias.version) is None:
                try:
                    predictor_cache.get(alias.version)
                except ServiceError:
                    pass  # recorded as unavailable; requests get the 503 with the reason


alias_watcher = AliasWatcher()
