"""Real, tiny, trained models for the inference tests.

A ``simple`` CNN learns three "characters" told apart by their dominant colour, trained for a few dozen
steps on generated pictures through the serving path's own preprocessing, so its predictions mean
something (each class's pictures come back as that class). Trained once per session, registered per test.
"""
from __future__ import annotations

import io
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from django.conf import settings
from PIL import Image, ImageDraw

from apps.ml.architectures import architectures
from apps.ml.artifacts import save_serving_artifact
from apps.ml.images import decode_eval_crop
from apps.ml.runtime import Normalizer

CLASSES = {  # label (character slug) → (display name, dominant colour)
    "colors_red_hero": ("Red Hero", (210, 40, 40)),
    "colors_green_mage": ("Green Mage", (40, 180, 60)),
    "colors_blue_knight": ("Blue Knight", (40, 70, 210)),
}
LABELS = list(CLASSES)


def class_image_bytes(label: str, seed: int, *, size=(160, 160), fmt="JPEG", color=None) -> bytes:
    """A picture of ``label``: its colour (or ``color``, for a character the model was not trained on) fills the
    background and one big shape; small grey clutter."""
    rng = random.Random(f"{label}-{seed}")
    base = color or CLASSES[label][1]
    jitter = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in base)
    img = Image.new("RGB", size, jitter)
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(4):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        grey = rng.randrange(60, 200)
        draw.ellipse([x0, y0, x0 + rng.randrange(8, w // 3), y0 + rng.randrange(8, h // 3)],
                     fill=(grey, grey, grey), outline=(0, 0, 0))
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


@dataclass
class TrainedArtifacts:
    folder: Path
    v1: Path
    v2: Path
    labels: list[str]


def _train(model: torch.nn.Module, steps: int, seed: int) -> None:
    """Calibrate BatchNorm on the pictures, then fit the linear head on the frozen features: a second of
    CPU instead of a minute, and still a model that tells the three classes apart."""
    arch = architectures.get("simple")
    normalize = Normalizer(arch.normalization)
    crops, targets = [], []
    for index, label in enumerate(LABELS):
        for s in range(8):
            data = class_image_bytes(label, 1000 + seed * 100 + s)
            crops.append(decode_eval_crop(data, image_size=arch.input_size, max_pixels=10**8))
            targets.append(index)
    x, y = torch.from_numpy(normalize(crops)), torch.tensor(targets)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average over the calibration pass
        model.train()
        model.features(x)
        model.eval()
        features = torch.flatten(model.pool(model.features(x)), 1)
    head = model.classifier[-1]
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head(features), y).backward()
        optimizer.step()


@pytest.fixture(scope="session")
def trained_artifacts() -> TrainedArtifacts:
    """v1: trained; v2: v1 trained a few steps more (different weights, same labels)."""
    torch.set_num_threads(1)
    folder = Path(settings.ARTIFACTS_DIR) / f"test-inference-{os.getpid()}"
    arch = architectures.get("simple")
    torch.manual_seed(0)
    model = arch.build(len(LABELS), weights="none")
    _train(model, steps=150, seed=0)
    common = {"architecture": "simple", "labels": LABELS, "input_size": arch.input_size,
              "normalization": arch.normalization}
    v1 = save_serving_artifact(folder / "v1.pt", model=model, metrics={"accuracy": 0.9}, **common)
    _train(model, steps=20, seed=1)
    v2 = save_serving_artifact(folder / "v2.pt", model=model, metrics={"accuracy": 0.95}, **common)
    yield TrainedArtifacts(folder=folder, v1=v1, v2=v2, labels=LABELS)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_predictors(settings):
    """No loaded model and no watcher thread leaks from one test into the next."""
    from apps.inference.loading import predictor_cache

    settings.KYARA_ALIAS_WATCH_SECONDS = 0
    predictor_cache.clear()
    yield
    predictor_cache.clear()


@pytest.fixture
def characters(db):
    from apps.characters.models import Character, Series

    series = Series.objects.create(slug="colors", name="Colors")
    return {slug: Character.objects.create(series=series, slug=slug, name=name) for slug, (name, _) in CLASSES.items()}


@dataclass
class Registry:
    v1: object
    v2: object
    artifacts: TrainedArtifacts


def register(path: Path, name: str, **extra):
    from apps.inference.services import model_version_register

    arch = architectures.get("simple")
    return model_version_register(name=name, architecture="simple", labels=LABELS, input_size=arch.input_size,
                                  normalization=arch.normalization, artifact=path,
                                  metrics=extra.pop("metrics", {}), **extra)


@pytest.fixture
def registry(characters, trained_artifacts) -> Registry:
    """Two registered versions, ``default`` → v1 (promoted through the service, so it is warm).

    The runtime each artifact serves with on this machine is measured at its first load in the run and carried
    to the versions later tests register from the same artifact (by content), as a deployment keeps it on the
    row: a test that promotes v1 then loads it without timing every candidate again (2-3 s of a 2-core box per
    test). Measuring itself is tested in test_runtime_choice.py, which never reuses a record."""
    from apps.inference.loading import machine_key
    from apps.inference.models import ModelVersion
    from apps.inference.services import model_alias_set, model_version_runtime_record

    key, _ = machine_key()
    v1 = register(trained_artifacts.v1, "simple-v1", metrics={"accuracy": 0.9, "per_class": {"x": 1}})
    v2 = register(trained_artifacts.v2, "simple-v2", metrics={"accuracy": 0.95})
    for version in (v1, v2):
        if (record := _RUNTIME_RECORDS.get((version.artifact_sha256, key))) is not None:
            model_version_runtime_record(version=version, key=key, record=record)
    model_alias_set(name="default", version=v1, why="first model")
    yield Registry(v1=v1, v2=v2, artifacts=trained_artifacts)
    for row in ModelVersion.objects.filter(pk__in=[v1.pk, v2.pk], dataset_version__isnull=True):
        record = (row.runtime_choices or {}).get(key)
        if record and record.get("where") == "first load":  # measured as the registry measures, not by a test's call
            _RUNTIME_RECORDS.setdefault((row.artifact_sha256, key), record)


# (artifact sha256, machine key) → the runtime record measured at that artifact's first load in this run.
_RUNTIME_RECORDS: dict[tuple[str, str], dict] = {}


@pytest.fixture
def class_images():
    """One fresh (unseen in training) JPEG per label."""
    return {label: class_image_bytes(label, 7) for label in LABELS}


@pytest.fixture
def broken_copy(trained_artifacts):
    """A writable copy of v1's artifact for tests that damage it."""
    target = trained_artifacts.folder / f"broken-{random.randrange(10**9)}.pt"
    shutil.copyfile(trained_artifacts.v1, target)
    yield target
    target.unlink(missing_ok=True)


def store_dataset(characters, name: str = "colors-v1", *, train: int = 6, val: int = 12, test: int = 0):
    """A frozen dataset version of the three colour classes: ``train``, ``val`` and ``test`` stored JPEGs per class
    (seeds apart from the ones the model was fitted on), as a freeze leaves them."""
    import hashlib

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from apps.characters.models import DatasetItem, DatasetVersion, Image

    version = DatasetVersion.objects.create(name=name, content_hash=hashlib.sha256(name.encode()).hexdigest())
    for label in LABELS:
        for split, count, base in (("train", train, 300), ("val", val, 500), ("test", test, 700)):
            for seed in range(base, base + count):
                data = class_image_bytes(label, seed)
                sha = hashlib.sha256(data).hexdigest()
                path = f"images/{sha[:2]}/{sha[2:4]}/{sha}.jpg"
                if not default_storage.exists(path):
                    default_storage.save(path, ContentFile(data))
                bands = [int(sha[i * 4:i * 4 + 4], 16) for i in range(4)]
                image = Image.objects.create(
                    sha256=sha, file=path, format="JPEG", width=160, height=160, bytes=len(data),
                    phash=int(sha[:15], 16), phash_b0=bands[0], phash_b1=bands[1], phash_b2=bands[2],
                    phash_b3=bands[3], character=characters[label], status="approved", source_kind="import")
                DatasetItem.objects.create(version=version, image=image, character=characters[label], split=split)
    return version
