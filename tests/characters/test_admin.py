"""Curation in the admin: bounded queries, bulk actions, relabel with autocomplete, near-duplicates."""
import pytest
from django.urls import reverse

from apps.characters.models import Image
from apps.characters.services import image_ingest
from tests.conftest import make_image_bytes, near_copy_bytes

pytestmark = pytest.mark.django_db


def _images(character, n, start=0):
    return [image_ingest(data=make_image_bytes(start + i), source_kind="upload", character=character).image
            for i in range(n)]


def _count_queries(client, url, django_assert_max_num_queries, limit):
    with django_assert_max_num_queries(limit) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_image_list_runs_a_bounded_number_of_queries(admin_client, character, django_assert_max_num_queries):
    url = reverse("admin:characters_image_changelist")
    _images(character, 3)
    few = _count_queries(admin_client, url, django_assert_max_num_queries, 30)
    _images(character, 30, start=100)
    many = _count_queries(admin_client, url, django_assert_max_num_queries, 30)
    assert many == few  # the page size does not change the number of queries
    response = admin_client.get(url + "?status=pending&side=lt128&series=genshin_impact&split=train")
    assert response.status_code == 200


def test_character_list_runs_a_bounded_number_of_queries(admin_client, series, django_assert_max_num_queries):
    from apps.characters.services import character_get_or_create

    url = reverse("admin:characters_character_changelist")
    for i in range(3):
        character_get_or_create(series=series, name=f"c{i}")
    few = _count_queries(admin_client, url, django_assert_max_num_queries, 20)
    for i in range(3, 40):
        character_get_or_create(series=series, name=f"c{i}")
    assert _count_queries(admin_client, url, django_assert_max_num_queries, 20) == few


def test_bulk_approve_reject_and_relabel(admin_client, character, other_character):
    images = _images(character, 3)
    ids = [str(i.pk) for i in images]
    url = reverse("admin:characters_image_changelist")
    admin_client.post(url, {"action": "approve", "_selected_action": ids})
    assert set(Image.objects.values_list("status", flat=True)) == {"approved"}
    form = admin_client.post(url, {"action": "reject", "_selected_action": ids[:1]})
    assert form.status_code == 200 and b"reason" in form.content  # the intermediate page asks why
    admin_client.post(url, {"action": "reject", "_selected_action": ids[:1], "apply": "1", "reason": "low_quality"})
    assert Image.objects.get(pk=ids[0]).reason == "low_quality"
    page = admin_client.post(url, {"action": "relabel", "_selected_action": ids})
    assert b"admin-autocomplete" in page.content  # the searchable character widget
    admin_client.post(url, {"action": "relabel", "_selected_action": ids, "apply": "1",
                            "character": other_character.pk})
    assert set(Image.objects.values_list("character", flat=True)) == {other_character.pk}


def test_character_autocomplete_searches(admin_client, character, other_character):
    response = admin_client.get(reverse("admin:autocomplete"), {
        "app_label": "characters", "model_name": "image", "field_name": "character", "term": "ganyu"})
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [str(other_character.pk)]


def test_near_duplicates_side_by_side(admin_client, character):
    original = image_ingest(data=make_image_bytes(7), source_kind="upload", character=character).image
    copy = image_ingest(data=near_copy_bytes(make_image_bytes(7)), source_kind="upload").image
    response = admin_client.get(reverse("admin:characters_image_near_duplicates", args=[original.pk]))
    assert response.status_code == 200
    assert f"#{copy.pk}".encode() in response.content and b"distance" in response.content
    change = admin_client.get(reverse("admin:characters_image_change", args=[original.pk]))
    assert change.status_code == 200 and original.thumbnail.encode() in change.content
