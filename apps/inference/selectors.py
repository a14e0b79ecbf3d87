"""Reads of the registry: which version a name means (the one resolver), the images a version is judged and
calibrated on, what is served, whether this process is ready."""
from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.core.cache import cache

from apps.core.api import DATABASE_DOWN, ServiceError
from apps.core.storage import read_stored

from .gallery import answers_from_gallery
from .loading import predictor_cache  # torch-free: the runtime is imported when a model loads
from .models import AliasChange, ModelAlias, ModelVersion

DEFAULT_ALIAS = "default"
logger = logging.getLogger(__name__)


_versions: dict[int, ModelVersion] = {}  # per process: id → row, refreshed whenever updated_at moves


def _version(pk: int, updated_at) -> ModelVersion:
    cached = _versions.get(pk)
    if cached is None or cached.updated_at != updated_at:
        cached = _versions[pk] = ModelVersion.objects.get(pk=pk)
    return cached


ALIAS_GENERATION_KEY = "kyara:inference:alias-generation"


def alias_key(name: str) -> str:
    """Where an alias's resolution is cached: under the registry's current generation, so an entry a request
    wrote from a read that raced a change (read before the commit, written after the invalidation) sits
    under a generation nobody reads any more, instead of serving the old version until it expires."""
    return f"kyara:inference:alias:{cache.get(ALIAS_GENERATION_KEY, 0)}:{name}"


def alias_generation_bump() -> None:
    """A new generation of alias resolutions: every cached one is forgotten (in this process's cache at once;
    with Redis, in every process)."""
    try:
        cache.incr(ALIAS_GENERATION_KEY)
    except ValueError:  # not there yet (or evicted): start it past 0
        if not cache.add(ALIAS_GENERATION_KEY, 1, timeout=None):
            cache.incr(ALIAS_GENERATION_KEY)


def model_resolve(name: str | None, *, versions_allowed: bool = True,
                  fresh: bool = False) -> tuple[ModelVersion, str | None]:
    """THE resolver of "an alias or a version name": an alias first, then a version name (when
    ``versions_allowed``); ``(version, alias or None)``. The predict API, ``evaluate --model`` and every
    alias move (``model_alias_set``'s target) ask it, so a name means one thing everywhere.

    The hot path touches no database: the alias → (version id, updated_at) pair lives in Django's cache
    for ``KYARA_ALIAS_CACHE_SECONDS`` and is dropped by signals the moment an alias or version changes
    (a new generation of keys, now and after the commit)
    (opening a SQLite connection per request cost more than a whole cached answer). The version row
    is kept per process and re-read whenever its updated_at moves. A move made in another process with
    a per-process cache (locmem) is seen within those seconds; with Redis at once. ``fresh`` reads the
    database and the row itself (a state change must not act on a cached answer).
    """
    name = (name or DEFAULT_ALIAS).strip()
    alias_name = name.lower()
    key = alias_key(alias_name)  # the generation is read before the database, never after
    pair = None if fresh else cache.get(key)
    if pair is None:
        row = ModelAlias.objects.filter(name=alias_name).values_list("version_id", "version__updated_at")[:1]
        if row:
            pair = tuple(row[0])
            cache.set(key, pair, settings.KYARA_ALIAS_CACHE_SECONDS)
    if pair is not None:
        return (ModelVersion.objects.get(pk=pair[0]) if fresh else _version(*pair)), alias_name
    version = ModelVersion.objects.filter(name=name).first()
    if version is not None:
        if not versions_allowed:
            raise ServiceError("version_not_allowed", f"{name!r} is a model version, not an alias; anonymous "
                               "clients may name aliases only (KYARA_PREDICT_ANON_VERSIONS). Sign in, or ask for "
                               "an alias to point at it.", status_code=403)
        return version, None
    if name == DEFAULT_ALIAS:
        raise ServiceError("no_model", "No model is promoted yet: point the 'default' alias at a model version "
                           "(manage.py set_alias default VERSION, the admin, or POST /api/v1/aliases/default/set/).",
                           status_code=503)
    known = sorted(ModelAlias.objects.values_list("name", flat=True))
    raise ServiceError("unknown_model", f"No alias or model version named {name!r}. Aliases: "
                       f"{', '.join(known) or 'none yet'}; GET /api/v1/models lists the versions.", status_code=404)


def _version_images(version: ModelVersion, split: str, limit: int) -> list[tuple[object, int]]:
    """(reader, label index in the version's output order) for up to ``limit`` images of ``split`` of the
    version's dataset version, spread evenly over the split (ordered by item id: the same ones every time)."""
    if version.dataset_version_id is None or limit <= 0:
        return []
    index = {slug: i for i, slug in enumerate(version.labels)}
    items = list(version.dataset_version.items.filter(split=split).order_by("id")
                 .values_list("image__file", "character__slug"))
    items = [(name, index[slug]) for name, slug in items if slug in index]
    if len(items) > limit:
        step = len(items) / limit
        items = [items[int(i * step)] for i in range(limit)]
    return [(functools.partial(read_stored, name), label) for name, label in items]


def guard_images(version: ModelVersion, split: str = "val") -> list[tuple[object, int]]:
    """The images a runtime is judged on (KYARA_RUNTIME_GUARD_IMAGES at most): the validation split, or
    ``split`` where it is asked (a model refit on train + val has seen val)."""
    return _version_images(version, split, settings.KYARA_RUNTIME_GUARD_IMAGES)


def calibration_images(version: ModelVersion) -> list[object]:
    """Training images an int8 graph is calibrated on (KYARA_RUNTIME_CALIBRATION_IMAGES at most)."""
    return [read for read, _ in _version_images(version, "train", settings.KYARA_RUNTIME_CALIBRATION_IMAGES)]


def temperature_images(version: ModelVersion, split: str, limit: int | None = None) -> list[tuple[object, int]]:
    """(reader, label index) of ``split``'s images of the version's classes a temperature is fitted on
    (KYARA_CALIBRATION_IMAGES at most, spread over the split)."""
    return _version_images(version, split, limit or settings.KYARA_CALIBRATION_IMAGES)


def character_serving(slug: str, alias: str = DEFAULT_ALIAS) -> dict:
    """Who answers for a character in the model ``alias`` points at: ``classifier`` (a class of it), ``gallery``
    (its approved images' prototype, until the next training makes it a class), or nobody (``None``)."""
    version = ModelVersion.objects.filter(aliases__name=alias).select_related("gallery").first()
    if version is None:
        return {"version": None, "source": None, "images": 0}
    gallery = getattr(version, "gallery", None)
    images = gallery.counts[gallery.labels.index(slug)] if gallery and slug in gallery.labels else 0
    fitted = answers_from_gallery(version)
    source = "classifier" if slug in version.labels else "gallery" if images and fitted else None
    return {"version": version.name, "source": source, "images": images, "gallery_fitted": fitted}


def metrics_summary(metrics: dict) -> dict:
    """The scalar, top-level metrics (accuracy, mean per-class accuracy...), not per-class tables."""
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def aliases_map() -> dict[str, str]:
    return dict(ModelAlias.objects.select_related("version").values_list("name", "version__name"))


def alias_history(name: str, limit: int = 100):
    return AliasChange.objects.filter(alias=name).select_related("from_version", "to_version", "actor")[:limit]


def inference_health() -> dict:
    """Live (this process answers) and ready (database up, a default model that is not known broken)."""
    default, problem, database = None, "", "ok"
    try:  # the readiness query is the database check too
        alias = ModelAlias.objects.select_related("version__availability").filter(name=DEFAULT_ALIAS).first()
    except Exception:  # noqa: BLE001 - the reason may name hosts and users: the log has it, clients do not
        logger.exception("Health check: the database did not answer")
        alias, database = None, DATABASE_DOWN
    if database == "ok" and alias is None:
        problem = "no model is promoted to 'default' yet"
    elif alias is not None:
        default = alias.version.name
        availability = getattr(alias.version, "availability", None)
        if availability is not None and not availability.available:
            problem = f"{default} is unavailable: {availability.reason}"
    loaded = predictor_cache.describe()
    ready = database == "ok" and default is not None and not problem
    return {"live": True, "ready": ready, "database": database, "default": default,
            "problem": problem, "loaded_models": loaded}
