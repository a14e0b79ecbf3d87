"""The character type-ahead (the review page's "search any character"): ``?search=`` on name or slug, exact
then prefix matches first, ``?limit=`` results, a fixed number of queries however many characters exist."""
from __future__ import annotations

import pytest

from apps.characters.models import Character, Image, Series
from apps.characters.services import image_ingest

pytestmark = [pytest.mark.django_db, pytest.mark.backend]


@pytest.fixture
def cast(db):
    series = Series.objects.create(slug="genshin_impact", name="Genshin Impact")
    other = Series.objects.create(slug="honkai", name="Honkai")
    names = {"taotie": "Taotie", "hu_tao": "Hu Tao", "tao": "Tao", "xiao": "Xiao", "tartaglia": "Tartaglia"}
    made = {slug: Character.objects.create(series=series, slug=slug, name=name) for slug, name in names.items()}
    made["hk_tao_li"] = Character.objects.create(series=other, slug="hk_tao_li", name="Li Taoist")
    return made


def slugs(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [row["slug"] for row in response.json()["results"]]


def test_search_puts_exact_then_prefix_matches_first(cast, api_client):
    found = slugs(api_client.get("/api/v1/characters/", {"search": "TAO"}))
    assert found[0] == "tao"  # exact (case aside)
    assert found[1] == "taotie"  # the name starts with it
    assert set(found[2:]) == {"hu_tao", "hk_tao_li"}  # it is inside the name or slug
    assert "xiao" not in found and "tartaglia" not in found
    assert slugs(api_client.get("/api/v1/characters/", {"search": "hk_"})) == ["hk_tao_li"]  # slugs match too


def test_limit_caps_the_page_and_counts_stay_right(cast, api_client, image_bytes):
    image_ingest(data=image_bytes(1), source_kind="import", character=cast["tao"])
    image_ingest(data=image_bytes(2), source_kind="upload", character=cast["tao"])
    body = api_client.get("/api/v1/characters/", {"search": "tao", "limit": 2}).json()
    assert [row["slug"] for row in body["results"]] == ["tao", "taotie"] and body["count"] == 4 and body["next"]
    assert (body["results"][0]["images"], body["results"][0]["approved"]) == (2, 1)
    assert (body["results"][1]["images"], body["results"][1]["approved"]) == (0, 0)
    assert len(api_client.get("/api/v1/characters/", {"limit": 1000}).json()["results"]) == 6  # at most 200
    assert Image.objects.count() == 2


def test_a_type_ahead_over_thousands_of_characters_takes_two_queries(cast, api_client,
                                                                       django_assert_max_num_queries):
    series = Series.objects.get(slug="honkai")
    Character.objects.bulk_create(Character(series=series, slug=f"extra_{i}", name=f"Extra Tao {i}")
                                  for i in range(3000))
    with django_assert_max_num_queries(2):  # the count and the page, image counts included
        found = slugs(api_client.get("/api/v1/characters/", {"search": "tao", "limit": 20}))
    assert found[:2] == ["tao", "taotie"] and len(found) == 20
