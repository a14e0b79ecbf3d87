"""The API's errors: the requests that used to answer 500 answer a 4xx in the one error shape, and the
schema documents the error responses every operation can give."""
import pytest

from apps.characters.services import character_get_or_create, image_ingest, series_get_or_create
from tests.conftest import make_image_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.backend]


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
    return body["error"]


@pytest.mark.parametrize("query", ["version=-4.898468616351291e+60", "version=1.5", "dup_group=99999999999999999999",
                                   "min_side=-3", "split=test&version=abc"])
def test_image_filters_that_do_not_fit_a_column_are_a_400(api_client, query):
    response = api_client.get(f"/api/v1/images/?{query}")
    assert response.status_code == 400 and error_of(response)["code"] == "invalid"


def test_deleting_what_is_still_referenced_is_a_409(staff_api_client):
    series = series_get_or_create(slug="genshin_impact")
    character = character_get_or_create(series=series, name="Hu Tao")
    image_ingest(data=make_image_bytes(1), source_kind="import", character=character)
    for path in (f"/api/v1/characters/{character.slug}/", f"/api/v1/series/{series.slug}/"):
        response = staff_api_client.delete(path)
        error = error_of(response)
        assert response.status_code == 409 and error["code"] == "protected", path
        assert "still refer to it" in error["message"]
    assert staff_api_client.get(f"/api/v1/characters/{character.slug}/").status_code == 200


@pytest.mark.parametrize("other", ["²", "١", "99999999999999999999999", "-1", ""])
def test_compare_with_a_strange_id_is_a_404(api_client, other):
    from apps.evaluation.models import EvaluationRun

    run = EvaluationRun.objects.create(model_version=_version(), dataset_version=_dataset(), split="test")
    response = api_client.get(f"/api/v1/evaluations/{run.pk}/compare/", {"with": other})
    assert response.status_code == 404 and error_of(response)["code"] == "unknown_run"


def _dataset():
    from apps.characters.models import DatasetVersion

    return DatasetVersion.objects.create(name="v", content_hash="x" * 64)


def _version():
    from apps.inference.models import ModelVersion

    return ModelVersion.objects.create(name="m", architecture="simple", labels=["a"], input_size=8,
                                       normalization={}, artifact="m.pt", artifact_sha256="0" * 64)


def test_not_found_and_forbidden_have_the_error_shape(api_client):
    assert error_of(api_client.get("/api/v1/series/nope/"))["code"] == "not_found"
    assert error_of(api_client.get("/api/v1/no-such-endpoint/"))["code"] == "not_found"
    assert error_of(api_client.delete("/api/v1/series/nope/"))["code"] in ("not_authenticated", "permission_denied")


def test_the_schema_documents_every_error_response(api_client):
    schema = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    assert "ErrorResponse" in schema["components"]["schemas"]
    checked = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"400", "403", "429"} <= codes, (method, path, codes)
            if "{" in path:
                assert "404" in codes, (method, path)
            if method in ("post", "put", "patch"):
                assert {"409", "413", "415"} <= codes, (method, path, codes)
            error = operation["responses"]["429"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path)
            checked += 1
    assert checked >= 60
    models = schema["paths"]["/api/v1/models/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert models == {"$ref": "#/components/schemas/ModelList"}  # one object, not a list of them
