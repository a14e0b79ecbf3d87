"""The review page through Django's test client: staff only, the queue's first page carried in the page as
the API lists it, the filters, and the nav's count of images waiting."""
from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from .conftest import GREEN, RED

pytestmark = pytest.mark.django_db

PAGE = "/ui/review/"


def embedded(response, name: str):
    """The JSON a ``json_script`` tag carries."""
    found = re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', response.content.decode(), re.S)
    assert found, f"no {name} in the page"
    return json.loads(found.group(1))


@pytest.fixture
def reviewer(client, staff_user):
    client.force_login(staff_user)
    return client


def test_the_page_is_for_staff_only(client, django_user_model, staff_user):
    assert reverse("review:page") == PAGE
    anonymous = client.get(PAGE)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    client.force_login(django_user_model.objects.create_user("viewer", password="pw-viewer"))
    assert client.get(PAGE).status_code == 302
    assert "nav-review-count" not in client.get(reverse("dashboard:home")).content.decode()  # no link either
    client.force_login(staff_user)
    assert client.get(PAGE).status_code == 200


def test_the_page_carries_the_queue_as_the_api_lists_it(reviewer, suggested, staff_api_client):
    w = suggested
    response = reviewer.get(PAGE)
    assert response.status_code == 200
    queue = embedded(response, "review-queue")
    api = staff_api_client.get("/api/v1/review/").json()
    assert queue["count"] == api["count"] == len(w.all)
    assert queue["results"] == api["results"]  # the same items, largest doubt first
    assert queue["results"][0]["id"] == w.contradicted.pk and queue["results"][0]["flagged"] is True
    first = queue["results"][0]
    assert [s["slug"] for s in first["suggestions"]][0] == RED and first["character"]["slug"] == GREEN
    body = response.content.decode()
    assert "Suggestions by <strong>simple-v1</strong>" in body
    assert 'csrftoken' in response.cookies  # the script posts decisions with it
    # The reject picker offers the curation service's reasons, keys 1–9.
    from apps.characters.services import REJECT_REASONS

    reasons = re.findall(r'data-reason="([a-z_]+)" data-key="(\d)"', body)
    assert [code for code, _key in reasons] == list(REJECT_REASONS)[:9]
    assert [key for _code, key in reasons] == [str(n) for n in range(1, len(reasons) + 1)]
    assert 'src="/static/kyara/review.js"' in body


def test_the_filters_narrow_the_queue_and_bad_ones_are_named(reviewer, suggested):
    w = suggested
    green = embedded(reviewer.get(PAGE, {"character": GREEN}), "review-queue")
    assert {item["id"] for item in green["results"]} == {w.confirmed[1].pk, w.unsure.pk, w.contradicted.pk}
    flagged = reviewer.get(PAGE, {"flagged": "true", "source": "safebooru"})
    assert [item["id"] for item in embedded(flagged, "review-queue")["results"]] == [w.contradicted.pk]
    assert embedded(flagged, "review-filters-data") == {"flagged": True, "source": "safebooru"}  # what the script sends
    assert 'value="true" id="filter-flagged" checked' in flagged.content.decode()
    everything = reviewer.get(PAGE, {"character": "", "source": "", "crawl_job": "", "plan": "", "unlabelled": ""})
    assert everything.status_code == 200 and embedded(everything, "review-queue")["count"] == len(w.all)
    unlabelled = embedded(reviewer.get(PAGE, {"unlabelled": "true"}), "review-queue")
    assert [item["id"] for item in unlabelled["results"]] == [w.unlabelled.pk]

    for query, message in (({"character": "nobody"}, "Unknown character &#x27;nobody&#x27;"),
                           ({"crawl_job": "abc"}, "crawl_job: A valid integer is required."),
                           ({"plan": "999999"}, "No evaluation run 999999")):
        response = reviewer.get(PAGE, query)
        assert response.status_code == 400 and message in response.content.decode(), query
        assert embedded(response, "review-queue") == {"count": 0, "results": []}
        assert embedded(response, "review-filters-data") == {}


def test_without_a_model_the_page_says_why_there_are_no_suggestions(reviewer, characters):
    from tests.inference.conftest import class_image_bytes

    from .conftest import ingest

    image = ingest(class_image_bytes(RED, 3), character=characters[RED])
    response = reviewer.get(PAGE)
    assert response.status_code == 200
    (item,) = embedded(response, "review-queue")["results"]
    assert item["id"] == image.pk and item["suggestions"] == []
    body = response.content.decode()
    assert "No model is promoted to &#x27;default&#x27; yet" in body
    assert re.search(r'id="bulk-open" disabled', body)


def test_the_nav_shows_staff_how_many_images_wait(reviewer, suggested):
    from django.core.cache import cache

    from apps.review.templatetags.review import PENDING_CACHE_KEY

    body = reviewer.get(reverse("dashboard:home")).content.decode()
    link = re.search(r'<a href="/ui/review/">Review <span class="nav-count" id="nav-review-count">(\d+)</span>', body)
    assert link and int(link.group(1)) == len(suggested.all)
    cache.delete(PENDING_CACHE_KEY)
    from apps.characters.models import Image

    Image.objects.filter(pk=suggested.unsure.pk).update(status="approved")
    page = reviewer.get(PAGE).content.decode()
    assert re.search(r'aria-current="page" class="current">Review <span class="nav-count" id="nav-review-count">'
                     rf'{len(suggested.all) - 1}</span>', page)


def test_an_evaluations_suspect_labels_are_reviewed_on_the_page(reviewer, suggested, registry):
    from apps.characters.models import DatasetVersion, Image
    from apps.evaluation.models import EvaluationRun

    w = suggested
    Image.objects.filter(pk=w.confirmed[0].pk).update(status="approved")  # in the dataset, labelled red
    run = EvaluationRun.objects.create(
        model_version=registry.v1, dataset_version=DatasetVersion.objects.create(name="d1", content_hash="0" * 64),
        status="succeeded", split="val",
        label_issues=[{"image": w.confirmed[0].pk, "label": RED, "predicted": GREEN, "probability": 0.97}])
    response = reviewer.get(PAGE, {"evaluation": run.pk})
    assert response.status_code == 200
    (item,) = embedded(response, "review-queue")["results"]
    assert item["id"] == w.confirmed[0].pk and item["status"] == "approved"
    assert embedded(response, "review-filters-data") == {"evaluation": run.pk}
    body = response.content.decode()
    assert 'id="review-label-issues"' in body and f'href="/ui/evaluations/{run.pk}/"' in body
    assert f'<option value="{run.pk}">run #{run.pk}' in body  # offered in the filter's list
    assert 'id="review-label-issues"' not in reviewer.get(PAGE).content.decode()
