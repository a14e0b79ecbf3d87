import pytest

from apps.characters.services import character_get_or_create, series_get_or_create


@pytest.fixture
def series(db):
    return series_get_or_create(slug="genshin_impact", name="Genshin Impact")


@pytest.fixture
def character(series):
    return character_get_or_create(series=series, name="胡桃")


@pytest.fixture
def other_character(series):
    return character_get_or_create(series=series, name="Ganyu (Twilight)")
