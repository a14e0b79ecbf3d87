"""The temperature is fitted on images the model did not train on and applied wherever a probability is read:
/predict, evaluate, suggestions and auto-approval, with the answers of a rigged model computed by hand."""
import math

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from apps.characters.models import Image
from apps.evaluation import services
from apps.inference.models import ModelVersion
from apps.inference.services import model_alias_set, model_version_calibrate
from apps.ml.calibration import fit_temperature
from apps.review.services import suggestions_compute
from tests.ml.images import class_image_bytes

from .conftest import make_version, register_rigged, softmax, store_image

pytestmark = pytest.mark.django_db

LABELS = ["char-0", "char-1", "char-2"]
LOGITS = [3.0, 1.0, 0.0]  # every image: char-0, far too sure for a model right a third of the time
T = 2.5


@pytest.fixture
def version(three_characters):
    return make_version("v-cal", three_characters)  # per character: 3 train, 2 val, 4 test


def _calibrated(version, temperature=T, **more):
    return register_rigged("cal", LABELS, LOGITS, dataset_version=version,
                           calibration={"temperature": temperature, "split": "val", "images": 6, **more})


def test_predict_evaluate_and_suggestions_read_the_calibrated_probability(version, three_characters, api_client):
    model = _calibrated(version)
    model_alias_set(name="default", version=model, why="test")
    hot, cold = softmax(np.array(LOGITS) / T)[0], softmax(LOGITS)[0]

    answer = api_client.post("/api/v1/predict", {"file": SimpleUploadedFile("a.jpg", class_image_bytes(0, 901))},
                             format="multipart").json()
    assert answer["predictions"][0]["probability"] == pytest.approx(hot, abs=1e-6)

    run = services.evaluation_run_execute(run_id=services.evaluation_run_create(
        model_version=model, dataset_version=version, split="test", queue=False).pk)
    assert run.top1 == pytest.approx(1 / 3)  # the ranking is the temperature's to keep
    assert run.ece == pytest.approx(abs(1 / 3 - hot), abs=1e-5)
    assert run.ece_uncalibrated == pytest.approx(abs(1 / 3 - cold), abs=1e-5)
    assert run.calibration["temperature"] == T and run.calibration["fitted"]["split"] == "val"
    assert sum(b["count"] for b in run.calibration["reliability_uncalibrated"]) == run.images

    pending = store_image(label=1, seed=950, character=three_characters[0])
    Image.objects.filter(pk=pending.pk).update(status="pending")
    # Auto-approval reads the calibrated number: 0.7 is below it, though the raw softmax (0.84) is above.
    assert hot < 0.7 < cold
    done = suggestions_compute(image_ids=[pending.pk], auto_approve_min_confidence=0.7)
    assert done["approved"] == 0 and Image.objects.get(pk=pending.pk).status == "pending"
    assert pending.suggestions.get().top[0]["probability"] == pytest.approx(hot, abs=1e-6)


def test_calibrate_fits_on_val_through_the_serving_path_and_every_answer_follows(version, api_client):
    model = register_rigged("plain", LABELS, LOGITS, dataset_version=version)
    model_alias_set(name="default", version=model, why="test")
    upload = class_image_bytes(0, 902)
    before = api_client.post("/api/v1/predict", {"file": SimpleUploadedFile("a.jpg", upload)}, format="multipart")
    assert before.json()["predictions"][0]["probability"] == pytest.approx(softmax(LOGITS)[0], abs=1e-6)

    call_command("calibrate", "plain", "--split", "val", stdout=open("/dev/null", "w"))
    model.refresh_from_db()
    # By hand: 6 val images, 2 per character, every one answered softmax(LOGITS).
    expected = fit_temperature(np.tile(LOGITS, (6, 1)), [0, 0, 1, 1, 2, 2])
    assert model.temperature == pytest.approx(expected, rel=1e-4)
    assert model.calibration["images"] == 6 and model.calibration["fitted_by"] == "calibrate"
    assert model.calibration["ece_after"] < model.calibration["ece_before"]
    after = api_client.post("/api/v1/predict", {"file": SimpleUploadedFile("a.jpg", upload)}, format="multipart")
    assert after.json()["predictions"][0]["probability"] == pytest.approx(
        softmax(np.array(LOGITS) / model.temperature)[0], abs=1e-5)  # not the cached answer of before


def test_calibrate_refuses_images_the_model_trained_on(version):
    refit = _calibrated(version, inherited_by_refit=True)
    with pytest.raises(CommandError, match="seen_split"):
        call_command("calibrate", refit.name, "--split", "val")
    report = model_version_calibrate(version=refit, split="test")  # the split it never saw
    assert report["split"] == "test" and report["images"] == 12 and report["previous"] == T
    assert ModelVersion.objects.get(pk=refit.pk).temperature == pytest.approx(report["temperature"])
    empty = make_version("v-empty-val", [], train=0, val=0, test=0)
    lonely = register_rigged("lonely", LABELS, LOGITS, dataset_version=empty)
    with pytest.raises(Exception, match="no val images"):
        model_version_calibrate(version=lonely, split="val")
    assert math.isfinite(report["nll_after"])
