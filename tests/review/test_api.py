"""The review API: staff only; the queue with its filters, paginated; decisions all or nothing with the bad
item named; undo; approve-agreeing."""
from __future__ import annotations

import pytest

from apps.characters.models import ImageEvent
from tests.review.conftest import GREEN, RED

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_client(django_user_model):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("viewer"))
    return client


def test_only_staff_may_read_or_decide(suggested, api_client, viewer_client):
    for client in (api_client, viewer_client):
        assert client.get("/api/v1/review/").status_code == 403
        response = client.post("/api/v1/review/decide", {"decisions": [
            {"image": suggested.unsure.pk, "action": "approve"}]}, format="json")
        assert response.status_code == 403
        assert client.post("/api/v1/review/undo").status_code == 403
        assert client.post("/api/v1/review/approve-agreeing", {"min_probability": 0.5}, format="json").status_code == 403
    suggested.unsure.refresh_from_db()
    assert suggested.unsure.status == "pending"


@pytest.mark.backend
def test_the_queue_lists_items_with_suggestions_largest_doubt_first(suggested, staff_api_client,
                                                                     django_assert_max_num_queries):
    w = suggested
    with django_assert_max_num_queries(12):
        body = staff_api_client.get("/api/v1/review/").json()
    assert body["count"] == len(w.all) and body["next"] is None
    first = body["results"][0]
    assert first["id"] == w.contradicted.pk
    assert first["character"] == {"slug": GREEN, "name": "Green Mage"}
    assert first["suggestions"][0]["slug"] == RED and first["suggestions"][0]["name"] == "Red Hero"
    assert len(first["suggestions"]) == 3 and first["agrees"] is False and first["flagged"] is True
    assert first["model_version"] == "simple-v1" and first["status"] == "pending"
    assert first["source"]["kind"] == "crawl" and first["source"]["site"] == "safebooru"
    assert first["thumbnail_url"].startswith("http://testserver/") and first["thumbnail_url"].endswith(".webp")
    unlabelled = next(item for item in body["results"] if item["id"] == w.unlabelled.pk)
    assert unlabelled["character"] is None and unlabelled["agrees"] is None
    page = staff_api_client.get("/api/v1/review/", {"page": 2}).json()  # 50 a page: no second one
    assert page["error"]["code"] == "not_found"


def test_the_queue_filters_by_query_parameters(suggested, staff_api_client):
    w = suggested

    def ids(**params) -> set[int]:
        response = staff_api_client.get("/api/v1/review/", params)
        assert response.status_code == 200, response.json()
        return {item["id"] for item in response.json()["results"]}

    assert ids(flagged="true") == {w.contradicted.pk}
    assert ids(character=RED) == {w.confirmed[0].pk, w.disputed.pk}
    assert ids(source="waifu_pics", unlabelled="true") == {w.unlabelled.pk}
    assert len(ids(flagged="false")) == len(w.all) - 1
    unknown = staff_api_client.get("/api/v1/review/", {"character": "nobody"})
    assert unknown.status_code == 400 and "Unknown character 'nobody'" in unknown.json()["error"]["message"]
    assert staff_api_client.get("/api/v1/review/", {"crawl_job": "-1"}).status_code == 400
    no_run = staff_api_client.get("/api/v1/review/", {"evaluation": 10**9})
    assert no_run.status_code == 400 and "No evaluation run 1000000000" in no_run.json()["error"]["message"]


@pytest.mark.backend
def test_decide_applies_everything_or_names_the_bad_item_and_applies_nothing(suggested, staff_api_client):
    w = suggested
    bad = [{"image": w.unsure.pk, "action": "approve"}, {"image": w.disputed.pk, "action": "reject"},
           {"image": w.contradicted.pk, "action": "relabel", "character": RED},
           {"image": w.unlabelled.pk, "action": "relabel", "character": "x"}]
    response = staff_api_client.post("/api/v1/review/decide", {"decisions": bad}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "decisions[3].character: unknown character 'x'" in error["message"]
    assert error["details"]["problems"] == [{"index": 3, "field": "character", "message": "unknown character 'x'"}]
    assert not ImageEvent.objects.exists()

    good = bad[:3] + [{"image": w.unlabelled.pk, "action": "relabel", "character": "colors_blue_knight"}]
    response = staff_api_client.post("/api/v1/review/decide/", {"decisions": good}, format="json")
    assert response.status_code == 200
    assert response.json() == {"batch": response.json()["batch"], "approved": 1, "rejected": 1, "relabelled": 2}
    remaining = {item["id"] for item in staff_api_client.get("/api/v1/review/").json()["results"]}
    assert remaining == {image.pk for image in w.all} - {w.unsure.pk, w.disputed.pk, w.contradicted.pk,
                                                          w.unlabelled.pk}

    assert staff_api_client.post("/api/v1/review/undo").json()["restored"] == 4
    assert len(staff_api_client.get("/api/v1/review/").json()["results"]) == len(w.all)
    nothing = staff_api_client.post("/api/v1/review/undo")
    assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "nothing_to_undo"


@pytest.mark.parametrize("body, message", [
    ({}, '"decisions"'),
    ({"decisions": "approve all"}, '"decisions"'),
    ({"decisions": []}, '"decisions"'),
    ({"decisions": [{"image": 2**70, "action": "approve"}]}, "decisions[0].image: must be an image id"),
    ({"decisions": [{"image": True, "action": "approve"}]}, "decisions[0].image: must be an image id"),
])
def test_decide_refuses_bodies_it_cannot_read(body, message, staff_api_client):
    response = staff_api_client.post("/api/v1/review/decide", body, format="json")
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_decide_reads_json_only(staff_api_client):
    response = staff_api_client.post("/api/v1/review/decide", {"decisions": "x"})  # multipart
    assert response.status_code == 415


def test_approve_agreeing_over_the_api(suggested, staff_api_client):
    w = suggested
    invalid = staff_api_client.post("/api/v1/review/approve-agreeing", {"min_probability": 1.5}, format="json")
    assert invalid.status_code == 400 and "min_probability" in invalid.json()["error"]["message"]
    response = staff_api_client.post("/api/v1/review/approve-agreeing", {"min_probability": 0.5, "character": GREEN},
                                     format="json")
    assert response.status_code == 200 and response.json()["approved"] == 2
    assert response.json()["model"] == "simple-v1"
    w.unsure.refresh_from_db()
    assert w.unsure.status == "approved"


@pytest.mark.backend
def test_without_a_default_model_the_queue_waits_in_arrival_order(characters, staff_api_client):
    from tests.review.conftest import ingest, red_green_mix

    first, second = (ingest(red_green_mix(quality=q), character=characters[RED]) for q in (70, 71))
    body = staff_api_client.get("/api/v1/review/").json()
    assert [item["id"] for item in body["results"]] == [first.pk, second.pk]
    assert body["results"][0]["suggestions"] == [] and body["results"][0]["model_version"] is None
    response = staff_api_client.post("/api/v1/review/approve-agreeing", {"min_probability": 0.5}, format="json")
    assert response.json()["approved"] == 0 and "No model is promoted" in response.json()["message"]
