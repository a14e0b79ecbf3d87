"""Embeddings and gallery characters: a character the served model has no class for is answered from its
approved images' embeddings, without retraining (the math is ``apps.ml.gallery``'s).

- Embeddings are written per model version: by the suggestion task, from the same forward as its suggestions,
  and by ``gallery_refresh`` for approved images that have none (an import of approved images, a new version).
  They live in the database (``ImageEmbedding``), where every worker and web process can read them.
- ``gallery_refresh`` rebuilds a version's ``Gallery`` (one prototype per character with approved images) when
  curation changed: a worker runs it after approvals, rejections, relabels and imports (``gallery_request``,
  which the apps below name by its dotted path), and every serving process reloads a gallery whose
  ``generation`` moved, checked at most every ``KYARA_GALLERY_POLL_SECONDS``.
- ``answer_many`` is the one way a batch of images is answered over the classifier's classes and the gallery's
  characters, with the source of each column: /predict, /predict_batch, suggestions and ``evaluate`` call it.

Brute force is what a gallery of prototypes needs: one row per character, ``images × characters`` dot products
(3,000 characters × 1,280 dimensions is 15 MB and well under a millisecond per image); an approximate index
would only pay at 10^5 rows and more, which is the suspect-label search's size, not this one's.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.characters.models import Character, Image, ImageEvent
from apps.core.queue import enqueue
from apps.ml import gallery as gallery_math

from .loading import character_info, predictor_cache
from .models import Gallery, ImageEmbedding, ModelAlias, ModelVersion

logger = logging.getLogger(__name__)

GALLERY_TASK = "apps.inference.tasks.gallery_refresh"
CLASSIFIER, GALLERY = "classifier", "gallery"

EMBED_CHUNK = 256


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float16).tobytes()


def from_blobs(blobs, dim: int | None = None) -> np.ndarray:
    rows = [np.frombuffer(bytes(blob), dtype=np.float16) for blob in blobs]
    if not rows:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.stack(rows).astype(np.float32)


# --- Embeddings -----------------------------------------------------------------------------------

def embeddings_store(*, version: ModelVersion, image_ids: list[int], vectors: np.ndarray) -> int:
    """Keep each image's embedding by ``version`` (a newer one replaces an older one)."""
    rows = [ImageEmbedding(version=version, image_id=pk, vector=to_blob(vector))
            for pk, vector in zip(image_ids, vectors, strict=True)]
    ImageEmbedding.objects.bulk_create(rows, update_conflicts=True, unique_fields=["version", "image"],
                                       update_fields=["vector"], batch_size=500)
    return len(rows)


def _read(name: str) -> bytes:
    try:
        with default_storage.open(name, "rb") as handle:
            return handle.read()
    except OSError:
        return b""  # the predictor refuses it: the image gets no embedding and is left out of the gallery


def embeddings_compute(*, version: ModelVersion, image_ids: list[int]) -> dict:
    """Embed images by ``version`` through its serving predictor, ``EMBED_CHUNK`` at a time; the ones that cannot
    be decoded are counted, not raised."""
    predictor = predictor_cache.get(version).predictor
    stored = failed = 0
    for start in range(0, len(image_ids), EMBED_CHUNK):
        rows = list(Image.objects.filter(pk__in=image_ids[start:start + EMBED_CHUNK]).values_list("pk", "file"))
        done = predictor.predict_many((_read(name) for _, name in rows), batch_size=settings.KYARA_EVAL_BATCH_SIZE,
                                      embeddings=True)
        stored += embeddings_store(version=version, image_ids=[rows[i][0] for i in done.kept], vectors=done.embeddings)
        failed += len(done.rejected)
    return {"stored": stored, "failed": failed}


# --- The gallery ----------------------------------------------------------------------------------

def embeddings_complete(version: ModelVersion) -> None:
    """Embed by ``version`` the approved images that have no embedding by it yet."""
    missing = list(_approved().exclude(embeddings__version=version).values_list("pk", flat=True))
    if missing:
        embeddings_compute(version=version, image_ids=missing)


def _approved():
    return Image.objects.filter(status=Image.Status.APPROVED, character__isnull=False, character__active=True)


def curation_fingerprint() -> str:
    """Changes whenever an image is added, approved, rejected or relabelled (every curation change writes an
    ``ImageEvent``; every new image a row) or a character is (de)activated."""
    return ":".join(str(value or 0) for value in (
        ImageEvent.objects.aggregate(m=Max("id"))["m"], Image.objects.aggregate(m=Max("id"))["m"],
        Character.objects.filter(active=False).count()))


def gallery_refresh(*, version: ModelVersion, force: bool = False) -> Gallery:
    """Rebuild ``version``'s prototypes from the approved images now, embedding those that have no embedding yet;
    nothing to do when curation has not changed since the last build (unless ``force``)."""
    started = time.perf_counter()
    fingerprint = curation_fingerprint()  # read first: a change made while this runs leaves it stale, so rebuilt
    gallery, _ = Gallery.objects.get_or_create(version=version)
    if gallery.fingerprint == fingerprint and not force:
        return gallery
    embeddings_complete(version)
    mean = _centre(version)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for slug, vectors in _approved_embeddings(version):
        vector = gallery_math.centred(vectors, mean).astype(np.float64).sum(axis=0)
        if slug in sums:
            sums[slug] += vector
            counts[slug] += len(vectors)
        else:
            sums[slug], counts[slug] = vector, len(vectors)
    labels = sorted(sums)
    prototypes = gallery_math.normalise(np.stack([sums[s] for s in labels])) if labels else np.zeros((0, 0))
    with transaction.atomic():
        gallery = Gallery.objects.select_for_update().get(pk=gallery.pk)
        gallery.labels, gallery.counts = labels, [counts[s] for s in labels]
        gallery.prototypes, gallery.dim = to_blob(prototypes), int(prototypes.shape[1]) if labels else 0
        gallery.mean = np.asarray(mean if mean is not None else [], dtype=np.float32).tobytes()
        gallery.fingerprint, gallery.generation = fingerprint, gallery.generation + 1
        gallery.refreshed_at, gallery.seconds = timezone.now(), round(time.perf_counter() - started, 3)
        gallery.save()
    logger.info("Gallery of %s: %d characters (%d outside the model), generation %d, %.1fs", version.name,
                len(labels), len(set(labels) - set(version.labels)), gallery.generation, gallery.seconds)
    return gallery


def _approved_embeddings(version: ModelVersion, chunk: int = 2000):
    """(character slug, its vectors) over the approved images' embeddings by ``version``, a chunk at a time:
    memory stays flat whatever the number of images."""
    rows = (ImageEmbedding.objects.filter(version=version, image__in=_approved()).order_by("image__character__slug")
            .values_list("image__character__slug", "vector").iterator(chunk_size=chunk))
    slug, blobs = None, []
    for row_slug, blob in rows:
        if row_slug != slug or len(blobs) >= chunk:
            if blobs:
                yield slug, from_blobs(blobs)
            slug, blobs = row_slug, []
        blobs.append(blob)
    if blobs:
        yield slug, from_blobs(blobs)


def _centre(version: ModelVersion) -> np.ndarray | None:
    """The centre embeddings are taken from: the training images' mean the version's gallery map was fitted with,
    else the approved images' mean."""
    fitted = ((version.calibration or {}).get("gallery") or {}).get("mean")
    if fitted:
        return np.asarray(fitted, dtype=np.float32)
    total, count = None, 0
    for _, vectors in _approved_embeddings(version):
        total = vectors.sum(axis=0) if total is None else total + vectors.sum(axis=0)
        count += len(vectors)
    return total / count if count else None


@dataclass
class Labelled:
    """Every approved image's embedding by one version, with its character and near-duplicate group."""

    image_ids: list[int]
    slugs: list[str]
    groups: list[int]
    vectors: np.ndarray  # N × D, float32, centred on ``mean`` and normalised


def approved_embeddings(version: ModelVersion) -> Labelled:
    """The approved set as ``version`` sees it (embedding the images that have no embedding by it yet)."""
    embeddings_complete(version)
    mean = _centre(version)
    ids, slugs, groups, blobs = [], [], [], []
    for pk, slug, group, blob in (ImageEmbedding.objects.filter(version=version, image__in=_approved())
                                  .order_by("image_id").values_list("image_id", "image__character__slug",
                                                                    "image__dup_group", "vector")
                                  .iterator(chunk_size=2000)):
        ids.append(pk)
        slugs.append(slug)
        groups.append(group if group is not None else -pk)  # an image without a group is a group of its own
        blobs.append(blob)
    vectors = gallery_math.centred(from_blobs(blobs), mean) if blobs else np.zeros((0, 0), dtype=np.float32)
    return Labelled(ids, slugs, groups, vectors)


def serving_versions() -> list[ModelVersion]:
    """The versions whose galleries are kept fresh: the ones an alias points at."""
    return list(ModelVersion.objects.filter(pk__in=ModelAlias.objects.values("version_id")))


def gallery_request() -> None:
    """Ask a worker to refresh the serving versions' galleries once the caller's transaction commits."""
    transaction.on_commit(lambda: enqueue(GALLERY_TASK, group="gallery"))


# --- What a serving process holds -----------------------------------------------------------------

@dataclass
class GalleryView:
    """A version's gallery characters (those the classifier has no class for) as a serving process holds them."""

    generation: int
    labels: list[str]  # the gallery characters
    prototypes: np.ndarray  # G × D, float32: theirs
    classes: np.ndarray  # C × D, float32: the classifier's classes' (a zero row: no approved image of it)
    mapping: dict
    mean: np.ndarray | None = None  # the centre (D)
    characters: dict[str, dict] = field(default_factory=dict)

    @property
    def stranger_limit(self) -> float:
        return float(self.mapping.get("stranger_limit", gallery_math.STRANGER_LIMIT))

    @property
    def active(self) -> bool:
        """Whether answers go through the prototypes (a gallery character, or the classes' own prototypes, which
        also say how far an image is from everything the model knows)."""
        return not self.weighed.empty

    def __post_init__(self) -> None:
        self.weighed = gallery_math.Prototypes.of(self.classes, self.prototypes)

    def extend(self, probabilities: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities over the classes then the gallery's characters, the chance each image is a stranger)."""
        if not self.active or embeddings.shape[1] != self.classes.shape[1]:
            return probabilities, np.zeros(len(probabilities), dtype=np.float32)
        return gallery_math.combine(probabilities, embeddings, self.weighed, self.mapping, self.mean)


EMPTY = GalleryView(generation=0, labels=[], prototypes=np.zeros((0, 0), np.float32),
                    classes=np.zeros((0, 0), np.float32), mapping={})


def answers_from_gallery(version: ModelVersion) -> bool:
    """Whether ``version`` answers through its prototypes: only with a prototype scale fitted on images it did not
    train on (training fits one; ``manage.py calibrate`` does for a version registered without). Without one, the
    gallery's probabilities would not be calibrated, and auto-approval and ``unknown`` read them as if they were;
    such a version answers from its classifier alone, as before galleries existed."""
    return bool(((version.calibration or {}).get("gallery") or {}).get("fitted"))


class GalleryCache:
    """Per process: each version's gallery view, re-read when its generation moved (asked at most every
    ``KYARA_GALLERY_POLL_SECONDS``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: dict[tuple, tuple[float, GalleryView]] = {}

    def get(self, version: ModelVersion) -> GalleryView:
        if not settings.KYARA_GALLERY:
            return EMPTY
        now = time.monotonic()
        key = (version.pk, version.artifact_sha256)
        with self._lock:
            checked, view = self._views.get(key, (None, None))
        if view is not None and now - checked < settings.KYARA_GALLERY_POLL_SECONDS:
            return view
        generation = Gallery.objects.filter(pk=version.pk).values_list("generation", flat=True).first()
        if generation is None:
            view = EMPTY
        elif view is None or view.generation != generation:
            view = self._load(version)
        with self._lock:
            self._views[key] = (now, view)
        return view

    @staticmethod
    def _load(version: ModelVersion) -> GalleryView:
        gallery = Gallery.objects.get(pk=version.pk)
        if not answers_from_gallery(version):  # uncalibrated: its gallery's probabilities would mean nothing
            return GalleryView(generation=gallery.generation, labels=[], prototypes=np.zeros((0, 0), np.float32),
                               classes=np.zeros((0, 0), np.float32), mapping={})
        known = {slug: i for i, slug in enumerate(version.labels)}
        rows = [i for i, slug in enumerate(gallery.labels) if slug not in known]
        prototypes = from_blobs([], gallery.dim)
        classes = np.zeros((len(known), gallery.dim), dtype=np.float32)
        if gallery.labels and gallery.dim:
            every = np.frombuffer(bytes(gallery.prototypes), dtype=np.float16).reshape(len(gallery.labels), gallery.dim)
            prototypes = every[rows].astype(np.float32)
            for i, slug in enumerate(gallery.labels):
                if slug in known:
                    classes[known[slug]] = every[i]
        labels = [gallery.labels[i] for i in rows]
        fitted = (version.calibration or {}).get("gallery") or {}
        mapping = {**gallery_math.DEFAULT_MAPPING,
                   **{key: fitted[key] for key in ("scale", "background", "stranger_limit") if key in fitted}}
        mean = np.frombuffer(bytes(gallery.mean), dtype=np.float32) if gallery.mean else None
        return GalleryView(generation=gallery.generation, labels=labels, prototypes=prototypes, classes=classes,
                           mapping=mapping, mean=mean, characters=character_info(labels))

    def clear(self) -> None:
        with self._lock:
            self._views.clear()


gallery_cache = GalleryCache()


@dataclass
class Answers:
    """A batch answered over the classifier's classes, then the gallery's characters."""

    labels: list[str]
    sources: list[str]  # per column: "classifier" or "gallery"
    probabilities: np.ndarray  # images × columns
    kept: list[int]
    rejected: list
    seconds: float
    generation: int
    stranger: np.ndarray  # per kept image: the chance it shows a character none of the columns is
    stranger_limit: float  # from it on, the answer is "unknown"
    embeddings: np.ndarray | None = None  # kept × D, when asked for

    def source_of(self, label: str) -> str:
        return GALLERY if label in self._gallery else CLASSIFIER

    def __post_init__(self) -> None:
        self._gallery = {label for label, source in zip(self.labels, self.sources, strict=True) if source == GALLERY}


def answer_space(predictor, view: GalleryView) -> tuple[list[str], list[str]]:
    return (list(predictor.labels) + view.labels,
            [CLASSIFIER] * len(predictor.labels) + [GALLERY] * len(view.labels))


def answer_many(loaded, version: ModelVersion, blobs, *, batch_size: int, embeddings: bool = False) -> Answers:
    """Every file through the serving predictor (one forward per batch gives logits and embeddings), the
    gallery's characters added on the same calibrated scale; ``embeddings``: keep them in the answer too."""
    view = gallery_cache.get(version)
    done = loaded.predictor.predict_many(blobs, batch_size=batch_size, embeddings=embeddings or view.active)
    probabilities, stranger = view.extend(done.probabilities, done.embeddings) if view.active else (
        done.probabilities, np.zeros(len(done.kept), dtype=np.float32))
    labels, sources = answer_space(loaded.predictor, view)
    return Answers(labels, sources, probabilities, done.kept, done.rejected, done.seconds, view.generation, stranger,
                   view.stranger_limit, done.embeddings if embeddings else None)
