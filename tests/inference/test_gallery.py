"""Gallery characters: a character the served model has no class for is answered from its approved images'
embeddings, within a minute of their approval, through the HTTP API, with a real qcluster worker."""
from __future__ import annotations

import time

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.characters.models import Character, Image, Series
from apps.inference.gallery import gallery_cache, gallery_refresh
from apps.inference.models import Gallery, ImageEmbedding
from tests.conftest import running_qcluster, wait_for

from .conftest import LABELS, class_image_bytes, store_dataset

RED, GREEN, BLUE = LABELS
YELLOW = "colors_yellow_bard"
YELLOW_RGB = (225, 205, 40)


def yellow(seed: int) -> bytes:
    return class_image_bytes(YELLOW, seed, color=YELLOW_RGB)


def _predict(client, data: bytes) -> dict:
    response = client.post("/api/v1/predict", {"file": SimpleUploadedFile("x.jpg", data), "top_k": 4},
                           format="multipart")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def quiet(settings):
    settings.KYARA_RUNTIME_CHOOSE_ON_REGISTER = False  # the worker would time runtimes for half a minute first
    settings.KYARA_INFERENCE_BACKEND = "torch"
    settings.KYARA_GALLERY_POLL_SECONDS = 0.2


@pytest.fixture
def calibrated(quiet, registry, characters):
    """``default`` (v1) as training leaves a model: its dataset version's images approved, its temperature and
    gallery map fitted on val (the calibrate command's service)."""
    from apps.inference.services import model_version_calibrate

    registry.v1.dataset_version = store_dataset(characters, train=6, val=8)
    registry.v1.save(update_fields=["dataset_version"])
    calibration = model_version_calibrate(version=registry.v1, split="val")
    assert calibration["gallery"]["fitted"] and len(calibration["gallery"]["mean"]) > 0
    registry.v1.refresh_from_db()
    return registry


@pytest.mark.slow
@pytest.mark.queue
@pytest.mark.backend  # the broker carries the refresh; embeddings and prototypes are binary columns
@pytest.mark.django_db(transaction=True)
def test_a_character_approved_now_is_answered_from_the_gallery_within_a_minute(calibrated, api_client, tmp_path):
    from apps.characters.services import images_import

    asked = yellow(500)
    before = _predict(api_client, asked)
    assert before["label"] in LABELS and before["model"]["gallery_characters"] == 0
    assert all(p["source"] == "classifier" for p in before["predictions"])
    folder = tmp_path / "curated" / "colors_Yellow Bard"
    folder.mkdir(parents=True)
    for seed in range(5):  # five approved images of a character the model has no class for
        (folder / f"{seed}.jpg").write_bytes(yellow(seed))
    with running_qcluster("qcluster-gallery.log", KYARA_INFERENCE_BACKEND="torch", KYARA_ALIAS_WATCH_SECONDS="0"):
        started = time.monotonic()
        assert images_import(path=tmp_path / "curated").new == 5  # approved on arrival; the worker is asked
        slug = Character.objects.get(name="Yellow Bard").slug
        answer = wait_for(lambda: (body := _predict(api_client, asked))["label"] == slug and body, timeout=60,
                          message="the gallery to answer the new character")
        took = time.monotonic() - started
    assert took < 60
    assert answer["source"] == "gallery" and answer["predictions"][0]["source"] == "gallery"
    assert answer["predictions"][0]["name"] == "Yellow Bard" and answer["model"]["gallery_characters"] == 1
    assert 0 < answer["predictions"][0]["probability"] <= 1
    assert ImageEmbedding.objects.filter(version=calibrated.v1).count() >= 5  # the worker embedded them
    for label in (RED, GREEN, BLUE):  # what the classifier knew, it still answers
        known = _predict(api_client, class_image_bytes(label, 501))
        assert known["label"] == label and known["source"] == "classifier"


@pytest.mark.backend  # embeddings upserted (ON CONFLICT) and read back as bytes or memoryview, by the backend
@pytest.mark.django_db
def test_a_rejected_or_relabelled_image_leaves_the_gallery_at_the_next_refresh(calibrated, api_client):
    registry = calibrated
    from apps.characters.services import image_ingest, image_reject

    series = Series.objects.get(slug="colors")
    bard = Character.objects.create(series=series, slug=YELLOW, name="Yellow Bard")
    images = [image_ingest(data=yellow(seed), source_kind="import", character=bard, status="approved",
                           near_duplicate_policy="skip").image for seed in range(3)]
    first = gallery_refresh(version=registry.v1)
    assert YELLOW in first.labels and first.counts[first.labels.index(YELLOW)] == 3
    assert gallery_refresh(version=registry.v1).generation == first.generation  # nothing changed: not rebuilt
    assert _predict(api_client, yellow(600))["label"] == YELLOW
    page = api_client.get(f"/ui/characters/{YELLOW}/").content.decode()  # the character's page says who answers
    assert "gallery</span> 3 approved images of it, in simple-v1" in " ".join(page.split())
    assert "a class of simple-v1" in api_client.get(f"/ui/characters/{RED}/").content.decode()
    image_reject(image_ids=[image.pk for image in images], reason="wrong_character")
    second = gallery_refresh(version=registry.v1)
    assert second.generation == first.generation + 1 and YELLOW not in second.labels
    gallery_cache.clear()
    assert _predict(api_client, yellow(600))["label"] != YELLOW
    assert "nobody yet" in api_client.get(f"/ui/characters/{YELLOW}/").content.decode()
    assert Image.objects.filter(status="approved", character=bard).count() == 0


@pytest.mark.django_db
def test_gallery_answers_are_the_same_in_predict_and_evaluate_and_suggestions(calibrated):
    """One function answers over classes and gallery (``answer_many``): the batch API, evaluation and the
    suggestions read the same probabilities, with the source of each column."""
    from apps.characters.services import image_ingest
    from apps.inference.gallery import answer_many
    from apps.inference.loading import predictor_cache

    registry = calibrated
    series = Series.objects.get(slug="colors")
    bard = Character.objects.create(series=series, slug=YELLOW, name="Yellow Bard")
    for seed in range(4):
        image_ingest(data=yellow(seed), source_kind="import", character=bard, status="approved",
                     near_duplicate_policy="skip")
    gallery_refresh(version=registry.v1)
    loaded = predictor_cache.get(registry.v1)
    answers = answer_many(loaded, registry.v1, [yellow(700), class_image_bytes(RED, 700)], batch_size=8)
    assert answers.labels == [*LABELS, YELLOW] and answers.sources == ["classifier"] * 3 + ["gallery"]
    assert answers.probabilities.shape == (2, 4) and np.allclose(answers.probabilities.sum(1), 1, atol=1e-5)
    assert [answers.labels[i] for i in answers.probabilities.argmax(1)] == [YELLOW, RED]
    assert Gallery.objects.get(pk=registry.v1.pk).dim == loaded.predictor.embedding_dim


@pytest.mark.django_db
def test_characters_outside_the_model_are_answered_unknown_and_measured(calibrated, characters, api_client):
    """Evaluate on a split that holds a character neither the classifier nor the gallery knows: the run reports
    known-versus-unseen AUROC and the unknown rate of each, at the threshold it chose on val; /predict answers
    ``unknown`` for that character's images."""
    from apps.characters.models import DatasetItem, DatasetVersion
    from apps.characters.services import image_ingest
    from apps.evaluation import services as evaluation

    series = Series.objects.get(slug="colors")
    bard = Character.objects.create(series=series, slug=YELLOW, name="Yellow Bard")
    version = store_dataset(characters, name="with-a-stranger", train=0, val=0, test=4)
    for seed in range(800, 806):  # pending: not approved, so never in the gallery
        image = image_ingest(data=yellow(seed), source_kind="crawl", character=bard, status="pending",
                             near_duplicate_policy="skip").image
        DatasetItem.objects.create(version=version, image=image, character=bard, split="test")
    gallery_refresh(version=calibrated.v1)  # the classes' prototypes, as promoting v1 has a worker build them
    run = evaluation.evaluation_run_execute(run_id=evaluation.evaluation_run_create(
        model_version=calibrated.v1, dataset_version=version, split="test", queue=False, apply_threshold=True).pk)
    assert run.status == "succeeded", run.error
    report = run.open_set
    assert (report["known_images"], report["unseen_images"]) == (12, 6)
    assert report["auroc"] >= 0.9
    assert report["unknown_rate_unseen"] >= 0.8 and report["unknown_rate_known"] <= 0.1
    assert not DatasetVersion.objects.filter(pk=version.pk, items__character=bard, items__image__status="approved")
    answer = _predict(api_client, yellow(900))
    assert answer["label"] == "unknown" and answer["unknown"] and answer["source"] is None


@pytest.mark.django_db
def test_a_version_without_a_fitted_prototype_scale_answers_from_its_classifier_alone(quiet, registry, api_client):
    """Its gallery's probabilities would not be calibrated (auto-approval and unknown read them as if they were):
    it answers as before galleries existed, and the character's page says how to change that."""
    from apps.characters.services import image_ingest

    series = Series.objects.get(slug="colors")
    bard = Character.objects.create(series=series, slug=YELLOW, name="Yellow Bard")
    for seed in range(4):
        image_ingest(data=yellow(seed), source_kind="import", character=bard, status="approved",
                     near_duplicate_policy="skip")
    built = gallery_refresh(version=registry.v1)
    assert YELLOW in built.labels  # built all the same: a calibrate makes it answer at once
    answer = _predict(api_client, yellow(950))
    assert answer["model"]["gallery_characters"] == 0 and answer["label"] in LABELS
    assert {p["source"] for p in answer["predictions"]} == {"classifier"} and answer["stranger"] == 0
    assert "manage.py calibrate simple-v1" in api_client.get(f"/ui/characters/{YELLOW}/").content.decode()
