"""Serving predict requests: uploads in, top-k characters out, through the result cache and the loaded model
(``loading``); a batch request is one forward at its size, which gives the classifier's calibrated
probabilities and the embeddings the gallery's characters are answered from (``gallery``). Every prediction
says its ``source``: ``classifier`` or ``gallery``. What /predict and /predict_batch call."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache

from apps.core.api import ServiceError
from apps.ml.images import ImageRejected as InputRejected  # no torch: the runtime loads with a model

from .gallery import GalleryView, answer_space, gallery_cache
from .loading import alias_watcher, predictor_cache
from .models import ModelVersion
from .selectors import model_resolve

IMAGE_REJECTION_STATUS = {"unsupported_format": 415, "not_an_image": 415}


@dataclass
class Upload:
    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def top_k_parse(raw) -> int:
    if raw in (None, ""):
        return settings.KYARA_PREDICT_TOP_K
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if not 1 <= value <= settings.KYARA_PREDICT_TOP_K_MAX:
        raise ServiceError("invalid_top_k", f"top_k must be a whole number from 1 to {settings.KYARA_PREDICT_TOP_K_MAX}.")
    return value


def result_cache_key(version: ModelVersion, image_sha256: str, top_k: int, gallery_generation: int = 0) -> str:
    # The artifact's sha is in the key too: a version whose file was replaced never serves old answers;
    # so are the open-set threshold, which decides the "unknown" flag stored with the answer, the temperature,
    # and the gallery's generation (a character approved since is one more possible answer).
    return (f"kyara:predict:v{version.pk}:{version.artifact_sha256[:16]}:{image_sha256}:k{top_k}"
            f":t{version.confidence_threshold}:T{version.temperature}:g{gallery_generation}")


def _reject(index: int, upload: Upload, exc: InputRejected, batch: bool) -> ServiceError:
    where = f"File {index + 1} ({upload.name!r})" if batch else f"The file {upload.name!r}"
    return ServiceError(exc.reason, f"{where}: {exc.message}", status_code=IMAGE_REJECTION_STATUS.get(exc.reason, 400),
                        **({"index": index, "filename": upload.name} if batch else {"filename": upload.name}))


def _answer(loaded, view: GalleryView, version: ModelVersion, probabilities, stranger: float, top_k: int,
            labels: list[str], sources: list[str]) -> dict:
    k = max(1, min(top_k, len(labels)))
    order = np.argsort(-probabilities, kind="stable")[:k]
    threshold = version.confidence_threshold
    unknown = (threshold is not None and float(probabilities[order[0]]) < threshold) or stranger >= view.stranger_limit
    predictions = []
    for i in order:
        slug = labels[i]
        info = loaded.characters.get(slug) or view.characters.get(slug) or {"slug": slug, "name": slug, "series": None}
        predictions.append({**info, "probability": round(float(probabilities[i]), 6), "source": sources[i]})
    return {"label": "unknown" if unknown else predictions[0]["slug"], "unknown": unknown, "threshold": threshold,
            "stranger": round(float(stranger), 6), "source": None if unknown else predictions[0]["source"],
            "predictions": predictions}


def predict_uploads(*, model: str | None, uploads: list[Upload], top_k, batch: bool = False,
                    versions_allowed: bool = True,
                    before_load: Callable[[ModelVersion], None] | None = None) -> dict:
    """Answer for every upload: cached results first, the rest decoded and run as one batched forward.

    ``before_load`` is called when answering needs a model this process has not loaded (a load costs
    seconds and memory): the API rate-limits loads per client with it.
    """
    started = time.perf_counter()
    alias_watcher.ensure_started()
    version, alias = model_resolve(model, versions_allowed=versions_allowed)
    k = top_k_parse(top_k)
    view = gallery_cache.get(version)
    shas = [upload.sha256 for upload in uploads]
    keys = [result_cache_key(version, sha, k, view.generation) for sha in shas]
    hits = cache.get_many(keys)
    lookup_ms = round((time.perf_counter() - started) * 1000, 3)
    results: list[dict | None] = [None] * len(uploads)
    for i, key in enumerate(keys):
        if key in hits:
            results[i] = {**hits[key], "cached": True, "time_ms": lookup_ms}
    missing = [i for i, result in enumerate(results) if result is None]
    backend = None
    if missing:
        if before_load is not None and predictor_cache.peek(version) is None:
            before_load(version)
        loaded = predictor_cache.get(version)
        predictor = loaded.predictor
        backend = predictor.backend_name
        began = time.perf_counter()
        try:
            crops = predictor.decode_batch([uploads[i].data for i in missing])
        except InputRejected as exc:
            index = missing[getattr(exc, "index", 0)]
            raise _reject(index, uploads[index], exc, batch) from None
        probabilities, embeddings = predictor.infer(predictor.normalize(crops))
        probabilities, stranger = view.extend(probabilities, embeddings)
        labels, sources = answer_space(predictor, view)
        per_image_ms = round((time.perf_counter() - began) * 1000 / len(missing), 3)
        fresh = {}
        for row, i in enumerate(missing):
            answer = _answer(loaded, view, version, probabilities[row], float(stranger[row]), k, labels, sources)
            fresh[keys[i]] = answer
            results[i] = {**answer, "cached": False, "time_ms": per_image_ms}
        cache.set_many(fresh, timeout=settings.RESULT_CACHE_TTL)
    for i, upload in enumerate(uploads):
        results[i] = {"filename": upload.name, "sha256": shas[i], **results[i]}
    loaded_now = predictor_cache.peek(version)
    return {
        "model": {"version": version.name, "alias": alias, "requested": model or "default",
                  "architecture": version.architecture, "gallery_characters": len(view.labels),
                  "gallery_generation": view.generation,
                  "backend": backend or (loaded_now.predictor.backend_name if loaded_now else None)},
        "results": results,
        "time_ms": round((time.perf_counter() - started) * 1000, 3),
    }
