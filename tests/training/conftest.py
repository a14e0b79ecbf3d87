"""A small frozen dataset version of learnable generated images, made with the ORM (no freeze rules)."""
from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from tests.ml.images import class_image_bytes

FAST = {"architecture": "simple", "image_size": 32, "batch_size": 16, "lr": 3e-3, "workers": 0, "threads": 1}


def make_dataset_version(name="v-train", *, classes=3, train=12, val=4, test=3, size=40):
    from apps.characters.models import Character, DatasetItem, DatasetVersion, Image, Series

    series, _ = Series.objects.get_or_create(slug="testseries", defaults={"name": "Test series"})
    version = DatasetVersion.objects.create(name=name, content_hash=hashlib.sha256(name.encode()).hexdigest(),
                                            counts={"splits": {"train": classes * train, "val": classes * val,
                                                               "test": classes * test}})
    seed = 0
    for label in range(classes):
        character, _ = Character.objects.get_or_create(series=series, slug=f"char-{label}", defaults={"name": f"Char {label}"})
        for split, count in (("train", train), ("val", val), ("test", test)):
            for _ in range(count):
                seed += 1
                data = class_image_bytes(label, seed, size=size)
                sha = hashlib.sha256(data).hexdigest()
                image = Image.objects.filter(sha256=sha).first()
                if image is None:
                    path = f"images/{sha[:2]}/{sha[2:4]}/{sha}.png"
                    if not default_storage.exists(path):
                        default_storage.save(path, ContentFile(data))
                    image = Image.objects.create(
                        sha256=sha, file=path, format="PNG", width=size, height=size, bytes=len(data),
                        phash=seed, phash_b0=seed, phash_b1=0, phash_b2=0, phash_b3=0, character=character,
                        status="approved", source_kind="import")
                DatasetItem.objects.create(version=version, image=image, character=character, split=split)
    return version


@pytest.fixture
def dataset_version(db):
    return make_dataset_version()


@pytest.fixture
def fast_config():
    return dict(FAST)


@pytest.fixture
def launcher_env(transactional_db, monkeypatch):
    """This process's environment as a worker's: the training child it launches opens the test database."""
    from tests.conftest import child_env

    for key, value in child_env(KYARA_TRAINING_THREADS="1").items():
        monkeypatch.setenv(key, value)
