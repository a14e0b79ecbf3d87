"""The characters API: reads for everyone, writes for staff, errors as JSON with a code."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from apps.characters.models import Image, ImageEvent
from apps.characters.services import image_ingest
from tests.conftest import make_image_bytes, near_copy_bytes

pytestmark = pytest.mark.django_db


def upload(client, seed=1, **extra):
    data = extra.pop("data", None) or make_image_bytes(seed)
    return client.post("/api/v1/images/", {"file": SimpleUploadedFile("x.png", data), **extra}, format="multipart")


@pytest.mark.backend
def test_series_and_characters_are_listed_with_counts(api_client, character):
    image_ingest(data=make_image_bytes(1), source_kind="import", character=character)
    series = api_client.get("/api/v1/series/").json()["results"]
    assert series[0]["slug"] == "genshin_impact" and series[0]["characters"] == 1
    chars = api_client.get("/api/v1/characters/", {"series": "genshin_impact"}).json()["results"]
    assert chars[0]["slug"] == character.slug and chars[0]["images"] == 1 and chars[0]["approved"] == 1
    detail = api_client.get(f"/api/v1/characters/{character.slug}/")
    assert detail.status_code == 200 and detail.json()["name"] == "胡桃"


def test_writes_need_staff_and_errors_are_json(api_client, character, django_user_model):
    response = upload(api_client)
    assert response.status_code in (401, 403)
    assert set(response.json()["error"]) == {"code", "message"}
    user = django_user_model.objects.create_user("viewer", password="pw")
    token = Token.objects.create(user=user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert upload(api_client).status_code == 403
    user.is_staff = True
    user.save()
    assert upload(api_client).status_code == 201  # token auth works for staff


def test_upload_goes_through_ingest(staff_api_client, character):
    created = upload(staff_api_client, character=character.slug)
    assert created.status_code == 201
    body = created.json()
    assert body["outcome"] == "new" and body["character"] == character.slug and body["status"] == "pending"
    assert body["thumbnail_url"].startswith("http://testserver/media/thumbs/")
    again = upload(staff_api_client)
    assert again.status_code == 200 and again.json()["outcome"] == "exact_duplicate"
    assert again.json()["id"] == body["id"]
    near = upload(staff_api_client, data=near_copy_bytes(make_image_bytes(1)), near_duplicate_policy="refuse")
    assert near.status_code == 409 and near.json()["error"]["code"] == "near_duplicate"
    bad = upload(staff_api_client, data=b"GIF89a garbage")
    assert bad.status_code == 400 and bad.json()["error"]["code"] in {"corrupt", "truncated", "not_an_image"}
    missing = staff_api_client.post("/api/v1/images/", {}, format="multipart")
    assert missing.status_code == 400 and "file" in missing.json()["error"]["message"]
    assert Image.objects.count() == 1


def test_upload_too_large_is_413(staff_api_client, settings):
    settings.KYARA_MAX_IMAGE_BYTES = 500
    response = upload(staff_api_client)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


@pytest.mark.backend
def test_curation_actions_are_audited(staff_api_client, character, other_character, staff_user):
    image = image_ingest(data=make_image_bytes(3), source_kind="upload", character=character).image
    url = f"/api/v1/images/{image.pk}"
    assert staff_api_client.post(f"{url}/approve/").json()["status"] == "approved"
    rejected = staff_api_client.post(f"{url}/reject/", {"reason": "low_quality"}, format="json").json()
    assert rejected["status"] == "rejected" and rejected["reason"] == "low_quality"
    bad = staff_api_client.post(f"{url}/reject/", {"reason": "meh"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    relabelled = staff_api_client.post(f"{url}/relabel/", {"character": other_character.slug}, format="json").json()
    assert relabelled["character"] == other_character.slug
    events = list(ImageEvent.objects.filter(image=image).order_by("id").values_list("kind", "from_value", "to_value", "actor"))
    assert events == [
        ("status", "pending", "approved", staff_user.pk),
        ("status", "approved", "rejected", staff_user.pk),
        ("label", character.slug, other_character.slug, staff_user.pk),
    ]
    image.refresh_from_db()
    assert image.file.name.startswith("images/")  # relabel never moves the file


@pytest.mark.backend
def test_image_filters(api_client, character, other_character):
    image_ingest(data=make_image_bytes(1), source_kind="import", character=character)
    image_ingest(data=make_image_bytes(2), source_kind="upload", character=other_character)
    image_ingest(data=make_image_bytes(3, size=(300, 300)), source_kind="upload")
    def ids(**q):
        return len(api_client.get("/api/v1/images/", q).json()["results"])
    assert ids() == 3
    assert ids(character=character.slug) == 1
    assert ids(series="genshin_impact") == 2
    assert ids(status="pending") == 2
    assert ids(unlabelled="true") == 1
    assert ids(min_side=200) == 1
    assert ids(source_kind="import") == 1


def test_freeze_through_the_api(staff_api_client, api_client, character):
    for s in range(8):
        image_ingest(data=make_image_bytes(100 + s), source_kind="import", character=character)
    assert api_client.post("/api/v1/dataset-versions/freeze/", {"name": "v1"}, format="json").status_code in (401, 403)
    response = staff_api_client.post("/api/v1/dataset-versions/freeze/", {"name": "v1", "min_images": 5}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["leak_report"]["leaks"] == 0 and sum(body["counts"]["splits"].values()) == 8
    dup = staff_api_client.post("/api/v1/dataset-versions/freeze/", {"name": "v1"}, format="json")
    assert dup.status_code == 400 and dup.json()["error"]["code"] == "name_taken"
    listed = api_client.get("/api/v1/dataset-versions/").json()["results"]
    assert [v["name"] for v in listed] == ["v1"]
    split = api_client.get("/api/v1/images/", {"split": "train"}).json()["count"]
    assert split == body["counts"]["splits"]["train"]


def test_openapi_schema_and_docs(api_client):
    schema = api_client.get("/api/v1/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/images/{id}/relabel/" in schema.content
    assert api_client.get("/api/docs/").status_code == 200
