"""Dataset versions with controlled pHashes, and models whose answers are known in advance.

A *rigged* model is the ``simple`` CNN with a zeroed linear head: its logits are the head's bias for
every image, so every image gets the same probabilities and the metrics can be computed by hand.
"""
from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from apps.ml.architectures import architectures
from apps.ml.artifacts import save_serving_artifact
from tests.ml.images import class_image_bytes

INPUT_SIZE = 32


@pytest.fixture(autouse=True)
def _fast_serving(settings):
    """Eager PyTorch (no ONNX export and timing race per load), no alias watcher, a fresh predictor cache."""
    from apps.inference.loading import predictor_cache

    settings.KYARA_INFERENCE_BACKEND = "torch"
    settings.KYARA_ALIAS_WATCH_SECONDS = 0
    settings.KYARA_EVAL_LATENCY_IMAGES = 5
    predictor_cache.clear()
    yield
    predictor_cache.clear()


def softmax(logits) -> np.ndarray:
    z = np.exp(np.asarray(logits, dtype=np.float64) - max(logits))
    return z / z.sum()


def store_image(*, label: int, seed: int, character, phash: int | None = None, data: bytes | None = None):
    """An approved image of ``character``; ``phash`` defaults to a value far from every other seed's."""
    from apps.characters.models import Image
    from apps.characters.phash import bands, to_signed

    data = data or class_image_bytes(label, seed, size=40)
    sha = hashlib.sha256(data).hexdigest()
    image = Image.objects.filter(sha256=sha).first()
    if image is not None:
        return image
    path = f"images/{sha[:2]}/{sha[2:4]}/{sha}.png"
    if not default_storage.exists(path):
        default_storage.save(path, ContentFile(data))
    # A pseudo-random 64-bit hash per seed: two of them within the near-duplicate distance is ~never.
    value = phash if phash is not None else int(hashlib.sha256(f"ph{seed}".encode()).hexdigest()[:16], 16)
    b = bands(value)
    return Image.objects.create(sha256=sha, file=path, format="PNG", width=40, height=40, bytes=len(data),
                                phash=to_signed(value), phash_b0=b[0], phash_b1=b[1], phash_b2=b[2], phash_b3=b[3],
                                character=character, status="approved", source_kind="import")


def scatter_phashes(version) -> None:
    """Give a version's images pseudo-random pHashes (the training tests' builder uses the seed itself, so
    all its images look like near-duplicates of each other)."""
    from apps.characters.models import Image
    from apps.characters.phash import bands, to_signed

    for image in Image.objects.filter(dataset_items__version=version).distinct():
        value = int(hashlib.sha256(f"scatter{image.sha256}".encode()).hexdigest()[:16], 16)
        b = bands(value)
        Image.objects.filter(pk=image.pk).update(phash=to_signed(value), phash_b0=b[0], phash_b1=b[1],
                                                 phash_b2=b[2], phash_b3=b[3])


def make_characters(slugs):
    from apps.characters.models import Character, Series

    series, _ = Series.objects.get_or_create(slug="evalseries", defaults={"name": "Eval series"})
    return [Character.objects.get_or_create(series=series, slug=slug, defaults={"name": slug.title()})[0]
            for slug in slugs]


def make_version(name: str, characters, *, train=3, val=2, test=4, seed_base=0, extra=()):
    """A dataset version with ``train``/``val``/``test`` images per character; ``extra``: more
    ``(image, character, split)`` items."""
    from apps.characters.models import DatasetItem, DatasetVersion

    version = DatasetVersion.objects.create(name=name, content_hash=hashlib.sha256(name.encode()).hexdigest())
    seed = seed_base
    for label, character in enumerate(characters):
        for split, count in (("train", train), ("val", val), ("test", test)):
            for _ in range(count):
                seed += 1
                image = store_image(label=label, seed=seed, character=character)
                DatasetItem.objects.create(version=version, image=image, character=character, split=split)
    for image, character, split in extra:
        DatasetItem.objects.create(version=version, image=image, character=character, split=split)
    return version


def rigged_artifact(labels, logits, *, name: str | None = None) -> Path:
    """A serving artifact whose every answer has ``softmax(logits)`` over ``labels``."""
    arch = architectures.get("simple")
    torch.manual_seed(0)
    model = arch.build(len(labels), weights="none")
    with torch.no_grad():
        head = model.classifier[-1]
        head.weight.zero_()
        head.bias.copy_(torch.tensor(logits, dtype=torch.float32))
    path = Path(settings.ARTIFACTS_DIR) / "test-evaluation" / f"{name or uuid.uuid4().hex}.pt"
    return save_serving_artifact(path, model=model, architecture="simple", labels=list(labels), input_size=INPUT_SIZE,
                                 normalization=arch.normalization)


def register_rigged(name, labels, logits, *, dataset_version=None, **extra):
    from apps.inference.services import model_version_register

    arch = architectures.get("simple")
    return model_version_register(name=name, architecture="simple", labels=list(labels), input_size=INPUT_SIZE,
                                  normalization=arch.normalization, artifact=rigged_artifact(labels, logits),
                                  dataset_version=dataset_version, **extra)


@pytest.fixture
def three_characters(db):
    return make_characters(["char-0", "char-1", "char-2"])


@pytest.fixture
def train_then_evaluate(settings, django_capture_on_commit_callbacks):
    """``train_then_evaluate(version, epochs=N)``: a real tiny training job of ``version`` run here (``manage.py
    train_job``), and the evaluation its success queues run here too; returns the job, refreshed."""
    from io import StringIO

    from django.core.management import call_command

    from apps.training import services as training
    from tests.training.conftest import FAST

    settings.KYARA_RUN_TASKS_INLINE = True

    def train(version, *, epochs: int):
        job = training.training_job_start(dataset_version=version, config={**FAST, "epochs": epochs}, queue=False)
        with django_capture_on_commit_callbacks(execute=True):
            call_command("train_job", job.pk, stdout=StringIO())
        job.refresh_from_db()
        return job
    return train
