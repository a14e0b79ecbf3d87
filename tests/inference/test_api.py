"""The predict, models and health endpoints, under /api/v1/ and at the original service's paths."""
from __future__ import annotations

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.inference.models import ModelAlias
from tests.conftest import make_image_bytes

from .conftest import LABELS, class_image_bytes

PREDICT_PATHS = ["/api/v1/predict", "/api/v1/predict/", "/predict"]


def upload(data: bytes, name: str = "picture.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
    return body["error"]


@pytest.mark.parametrize("path", PREDICT_PATHS)
def test_predict_answers_the_right_character(path, api_client, registry, class_images):
    for label, data in class_images.items():
        response = api_client.post(path, {"file": upload(data)}, format="multipart")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["model"]["version"] == "simple-v1" and body["model"]["alias"] == "default"
        assert body["label"] == label and body["unknown"] is False and body["cached"] is False
        top = body["predictions"][0]
        assert top["slug"] == label and top["name"] and top["series"] == {"slug": "colors", "name": "Colors"}
        assert 0.5 < top["probability"] <= 1 and len(body["predictions"]) == 3  # top_k 5, capped at 3 labels
        assert body["time_ms"] > 0 and len(body["sha256"]) == 64


def test_predict_by_version_name_alias_and_top_k(api_client, staff_api_client, registry, class_images):
    data = class_images[LABELS[2]]
    by_version = staff_api_client.post("/api/v1/predict?model=simple-v2&top_k=2", {"file": upload(data)}).json()
    assert by_version["model"] == {**by_version["model"], "version": "simple-v2", "alias": None}
    assert len(by_version["predictions"]) == 2 and by_version["label"] == LABELS[2]
    ModelAlias.objects.create(name="candidate", version=registry.v2)
    by_alias = api_client.post("/api/v1/predict", {"file": upload(data), "model": "candidate", "top_k": "1"}).json()
    assert by_alias["model"]["alias"] == "candidate" and len(by_alias["predictions"]) == 1


@pytest.mark.backend
def test_open_set_threshold_says_unknown_but_keeps_top_k(api_client, registry, class_images):
    assert api_client.post("/api/v1/predict?top_k=2", {"file": upload(class_images[LABELS[0]])}).json()["unknown"] is False
    registry.v1.confidence_threshold = 1.01  # nothing reaches it; seen at once, though the alias was cached
    registry.v1.save()
    body = api_client.post("/api/v1/predict", {"file": upload(class_images[LABELS[0]])}).json()
    assert body["unknown"] is True and body["label"] == "unknown" and body["threshold"] == 1.01
    assert body["predictions"][0]["slug"] == LABELS[0]
    # The answer cached before the threshold moved is not served with its stale "unknown" flag.
    again = api_client.post("/api/v1/predict?top_k=2", {"file": upload(class_images[LABELS[0]])}).json()
    assert again["unknown"] is True and again["cached"] is False


@pytest.mark.parametrize("path", ["/api/v1/predict_batch", "/predict_batch"])
def test_predict_batch_answers_in_order(path, api_client, registry):
    images = [class_image_bytes(label, 20 + i) for i in range(3) for label in LABELS]  # 9 images
    response = api_client.post(path, {"files": [upload(d, f"{i}.jpg") for i, d in enumerate(images)]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 9 and body["model"]["version"] == "simple-v1"
    assert [r["label"] for r in body["results"]] == [label for _ in range(3) for label in LABELS]
    assert [r["filename"] for r in body["results"]] == [f"{i}.jpg" for i in range(9)]


@pytest.mark.backend
def test_cache_hit_then_expiry(api_client, registry, class_images, settings):
    settings.RESULT_CACHE_TTL = 1
    data = class_images[LABELS[1]]
    first = api_client.post("/api/v1/predict", {"file": upload(data)}).json()
    second = api_client.post("/api/v1/predict", {"file": upload(data, "renamed.jpg")}).json()
    assert first["cached"] is False and second["cached"] is True
    assert second["predictions"] == first["predictions"] and second["filename"] == "renamed.jpg"
    other_k = api_client.post("/api/v1/predict?top_k=1", {"file": upload(data)}).json()
    assert other_k["cached"] is False  # top_k is part of the key
    time.sleep(1.2)
    assert api_client.post("/api/v1/predict", {"file": upload(data)}).json()["cached"] is False


@pytest.mark.backend
def test_a_cached_answer_needs_no_database(api_client, registry, class_images, django_assert_num_queries):
    data = class_images[LABELS[0]]
    api_client.post("/api/v1/predict", {"file": upload(data)})
    with django_assert_num_queries(0):
        assert api_client.post("/api/v1/predict", {"file": upload(data)}).json()["cached"] is True


@pytest.mark.backend
def test_batch_mixes_cached_and_fresh_results(api_client, registry, class_images):
    a, b = class_images[LABELS[0]], class_images[LABELS[2]]
    api_client.post("/api/v1/predict", {"file": upload(a)})
    body = api_client.post("/api/v1/predict_batch", {"files": [upload(a), upload(b)]}).json()
    assert [r["cached"] for r in body["results"]] == [True, False]
    assert [r["label"] for r in body["results"]] == [LABELS[0], LABELS[2]]


# --- Bad input: a JSON 4xx with a code and a message, never a 500 -------------------------------------

def truncated_jpeg() -> bytes:
    return class_image_bytes(LABELS[0], 3, size=(300, 300))[:900]


@pytest.mark.parametrize("data, status, code", [
    (b"", 400, "empty"),
    (b"%PDF-1.4 definitely not an image", 415, "not_an_image"),
    (None, 400, "truncated"),
    (make_image_bytes(9, size=(64, 64), fmt="TIFF"), 415, "unsupported_format"),
    (make_image_bytes(9, size=(3, 64), fmt="PNG"), 400, "too_small"),
])
def test_predict_rejects_bad_images(data, status, code, api_client, registry):
    data = truncated_jpeg() if data is None else data
    response = api_client.post("/api/v1/predict", {"file": upload(data)})
    assert response.status_code == status and error_of(response)["code"] == code


def test_predict_rejects_corrupt_image(api_client, registry):
    data = bytearray(make_image_bytes(4, size=(200, 200), fmt="PNG"))
    data[60:400] = bytes(340)
    response = api_client.post("/api/v1/predict", {"file": upload(bytes(data))})
    assert response.status_code == 400 and error_of(response)["code"] in {"corrupt", "truncated"}


def test_predict_rejects_too_many_bytes_and_pixels(api_client, registry, settings, class_images):
    settings.KYARA_PREDICT_MAX_BYTES = 1000
    response = api_client.post("/api/v1/predict", {"file": upload(class_images[LABELS[0]])})
    assert response.status_code == 413 and error_of(response)["code"] == "too_large"
    settings.KYARA_PREDICT_MAX_BYTES = 10**7
    settings.KYARA_PREDICT_MAX_PIXELS = 100 * 100  # read when the model loads
    from apps.inference.loading import predictor_cache

    predictor_cache.clear()
    response = api_client.post("/api/v1/predict", {"file": upload(class_images[LABELS[0]])})
    assert response.status_code == 400 and error_of(response)["code"] == "too_many_pixels"


def test_missing_file_bad_top_k_and_json_body(api_client, registry, class_images):
    response = api_client.post("/api/v1/predict", {"model": "default"})
    assert response.status_code == 400 and error_of(response)["code"] == "no_file"
    response = api_client.post("/api/v1/predict?top_k=0", {"file": upload(class_images[LABELS[0]])})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_top_k"
    response = api_client.post("/api/v1/predict", {"file": "x"}, format="json")
    assert response.status_code == 415 and error_of(response)["code"] == "unsupported_media_type"


def test_batch_limits(api_client, registry, class_images):
    data = class_images[LABELS[0]]
    response = api_client.post("/api/v1/predict_batch", {"files": [upload(data) for _ in range(11)]})
    assert response.status_code == 400 and error_of(response)["code"] == "too_many_files"
    # Past Django's own DATA_UPLOAD_MAX_NUMBER_FILES (100): still our JSON, not Django's HTML 400.
    response = api_client.post("/api/v1/predict_batch", {"files": [upload(b"x") for _ in range(101)]})
    assert response.status_code == 400 and error_of(response)["code"] == "too_many_files"
    bad = api_client.post("/api/v1/predict_batch", {"files": [upload(data), upload(b"nope", "second.png")]})
    error = error_of(bad)
    assert bad.status_code == 415 and error["details"] == {"index": 1, "filename": "second.png"}


def test_unknown_model_and_no_model_promoted(api_client, characters, trained_artifacts, class_images):
    data = class_images[LABELS[0]]
    response = api_client.post("/api/v1/predict", {"file": upload(data)})
    assert response.status_code == 503 and error_of(response)["code"] == "no_model"
    response = api_client.post("/api/v1/predict?model=nonesuch", {"file": upload(data)})
    assert response.status_code == 404 and error_of(response)["code"] == "unknown_model"


def test_predict_is_throttled_for_anonymous_clients(api_client, registry, class_images, throttle_rates):
    throttle_rates(predict_anon="2/min")
    codes = [api_client.post("/api/v1/predict", {"file": upload(class_images[LABELS[0]])}).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]


def test_anonymous_clients_name_aliases_not_versions(api_client, registry, class_images, django_user_model, settings):
    data = {"file": upload(class_images[LABELS[1]])}
    response = api_client.post("/api/v1/predict?model=simple-v2", data)
    error = error_of(response)
    assert response.status_code == 403 and error["code"] == "version_not_allowed" and "alias" in error["message"]
    from apps.inference.loading import predictor_cache

    assert predictor_cache.peek(registry.v2) is None  # refused before anything was loaded
    ModelAlias.objects.create(name="candidate", version=registry.v2)
    data["file"].seek(0)
    assert api_client.post("/api/v1/predict?model=candidate", data).json()["model"]["version"] == "simple-v2"
    # A signed-in (not staff) client may name a version; so may anyone when the setting allows it.
    user = django_user_model.objects.create_user("viewer", password="pw-viewer-123")
    api_client.force_authenticate(user)
    data["file"].seek(0)
    assert api_client.post("/api/v1/predict_batch?model=simple-v1", {"files": [data["file"]]}).status_code == 200
    api_client.force_authenticate(None)
    settings.KYARA_PREDICT_ANON_VERSIONS = True
    data["file"].seek(0)
    assert api_client.post("/api/v1/predict?model=simple-v1", data).status_code == 200


@pytest.mark.backend
def test_model_loads_are_rate_limited_per_client(api_client, staff_api_client, registry, class_images, settings,
                                                 throttle_rates):
    from apps.inference.loading import predictor_cache

    throttle_rates(model_load="2/hour")
    settings.KYARA_PREDICTOR_CACHE_SIZE = 1  # every switch of alias evicts the other model
    ModelAlias.objects.create(name="candidate", version=registry.v2)
    predictor_cache.clear()

    def ask(client, alias, seed):
        return client.post(f"/api/v1/predict?model={alias}", {"file": upload(class_image_bytes(LABELS[0], seed))})

    # default (load 1), candidate (load 2), candidate again (loaded: free), default (a third load: refused).
    codes = [ask(api_client, alias, seed).status_code
             for seed, alias in enumerate(["default", "candidate", "candidate", "default"], start=100)]
    assert codes == [200, 200, 200, 429]
    refused = ask(api_client, "default", 200)
    error = error_of(refused)
    assert error["code"] == "throttled" and "simple-v1" in error["message"] and int(refused["Retry-After"]) > 0
    # A cached answer needs no load, so it is still served; staff are not counted; other clients have their own.
    assert ask(api_client, "candidate", 101).json()["cached"] is True
    assert ask(staff_api_client, "default", 300).status_code == 200
    assert ask(api_client, "default", 100).json()["cached"] is True  # (cached by the first request)
    predictor_cache.clear()
    other = api_client.post("/api/v1/predict", {"file": upload(class_image_bytes(LABELS[0], 400))},
                            REMOTE_ADDR="10.0.0.9")
    assert other.status_code == 200


# --- Corrupt or missing artifacts: the version is unavailable with a reason -----------------------------

def test_corrupt_artifact_makes_the_version_unavailable_not_a_crash(api_client, registry, broken_copy, class_images):
    from .conftest import register

    broken = register(broken_copy, "simple-broken")
    broken_copy.write_bytes(broken_copy.read_bytes()[:5000])  # damaged after registration
    ModelAlias.objects.create(name="broken", version=broken)
    response = api_client.post("/api/v1/predict?model=broken", {"file": upload(class_images[LABELS[0]])})
    error = error_of(response)
    assert response.status_code == 503 and error["code"] == "model_unavailable" and "corrupt" in error["message"]
    listed = {v["name"]: v for v in api_client.get("/api/v1/models").json()["versions"]}
    assert listed["simple-broken"]["available"] is False and "sha256" in listed["simple-broken"]["unavailable_reason"]
    # The others keep serving.
    assert api_client.post("/api/v1/predict", {"file": upload(class_images[LABELS[0]])}).status_code == 200


def test_missing_artifact_and_unreadable_artifact(api_client, registry, broken_copy, class_images, staff_api_client):
    from .conftest import register

    garbage = register(broken_copy, "simple-garbage")
    broken_copy.write_bytes(b"not a torch file at all")
    garbage.artifact_sha256 = __import__("hashlib").sha256(b"not a torch file at all").hexdigest()
    garbage.save()  # sha matches, content does not load
    response = staff_api_client.post("/api/v1/aliases/default/set", {"version": "simple-garbage"}, format="json")
    assert response.status_code == 503 and "could not be read" in error_of(response)["message"]
    assert ModelAlias.objects.get(name="default").version == registry.v1  # promotion refused
    broken_copy.unlink()
    from apps.inference.loading import predictor_cache

    predictor_cache.clear()
    response = staff_api_client.post("/api/v1/predict?model=simple-garbage", {"file": upload(class_images[LABELS[0]])})
    assert response.status_code == 503 and "missing" in error_of(response)["message"]


# --- Models and health ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/models/", "/models"])
def test_models_lists_versions_aliases_labels_metrics(path, api_client, registry):
    body = api_client.get(path).json()
    assert body["aliases"] == {"default": "simple-v1"}
    versions = {v["name"]: v for v in body["versions"]}
    v1 = versions["simple-v1"]
    assert v1["labels"] == LABELS and v1["aliases"] == ["default"] and v1["metrics"] == {"accuracy": 0.9}
    assert v1["available"] is True and v1["loaded"] is True and versions["simple-v2"]["available"] is None


def test_model_detail(api_client, registry, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        body = api_client.get("/api/v1/models/simple-v2").json()
    assert body["name"] == "simple-v2" and body["architecture"] == "simple" and body["input_size"] == 128
    assert api_client.get("/api/v1/models/nope").status_code == 404


@pytest.mark.parametrize("path", ["/api/v1/health", "/health"])
def test_health_live_and_ready(path, api_client, registry, class_images):
    api_client.post("/api/v1/predict", {"file": upload(class_images[LABELS[0]])})
    response = api_client.get(path)
    body = response.json()
    assert response.status_code == 200 and body["live"] and body["ready"] and body["default"] == "simple-v1"
    assert [m["version"] for m in body["loaded_models"]] == ["simple-v1"]
    loaded = body["loaded_models"][0]
    # No validation images for these versions: only an fp32 runtime may serve, the one recorded for this machine.
    assert loaded["backend"] in {"onnxruntime", "torch", "openvino-fp32"}
    assert loaded["runtime"]["chosen"] == loaded["backend"] and loaded["runtime"]["source"] in {"measured", "recorded"}


def test_health_not_ready_without_a_model(api_client, db):
    response = api_client.get("/api/v1/health")
    assert response.status_code == 503 and response.json()["live"] is True
    assert "no model" in response.json()["problem"]
