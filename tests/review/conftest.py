"""A real trained model promoted to ``default`` (the inference tests' colour classes) and images awaiting
review whose claimed labels the model confirms, contradicts, cannot judge, or which have none."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.dashboard.conftest import session  # noqa: F401 - a page session in Chromium for the review page's tests
from tests.evaluation.conftest import _fast_serving  # noqa: F401 - autouse: eager PyTorch, fresh predictor cache
from tests.inference.conftest import (  # noqa: F401 - fixtures reused
    LABELS,
    characters,
    class_image_bytes,
    registry,
    trained_artifacts,
)

RED, GREEN, BLUE = LABELS


def ingest(data: bytes, *, character=None, status: str = "pending", source_kind: str = "crawl",
           source_site: str = "safebooru", policy: str = "skip"):
    """A stored image (through the one ingest path); the near-duplicate check is skipped unless asked for:
    the colour pictures of one class look alike to a pHash."""
    from apps.characters.services import image_ingest

    result = image_ingest(data=data, source_kind=source_kind, character=character, status=status,
                          near_duplicate_policy=policy, source_site=source_site)
    assert result.outcome == "new", result.message
    return result.image


def red_green_mix(seed: int = 60, *, quality: int = 90) -> bytes:
    """A red picture 40% blended into a green one: the model says green, about 73% sure (not enough to flag)
    for seed 60; another ``quality`` gives other bytes of the same picture."""
    import io

    from PIL import Image

    red, green = (Image.open(io.BytesIO(class_image_bytes(label, seed))).convert("RGB") for label in (RED, GREEN))
    out = io.BytesIO()
    Image.blend(red, green, 0.4).save(out, "JPEG", quality=quality)
    return out.getvalue()


@dataclass
class Waiting:
    """Pending images: ``confirmed`` (labelled as what they show, the model sure), ``unsure`` (a red-green
    mix labelled green: agreed, about 73% sure), ``disputed`` (the same mix labelled red: contradicted, not
    sure enough to flag), ``contradicted`` (a red picture labelled green: flagged), ``unlabelled`` (a blue
    picture, from Waifu.pics), ``unknown`` (labelled with a character the model has no class for, uploaded)."""

    confirmed: list
    unsure: object
    disputed: object
    contradicted: object
    unlabelled: object
    unknown: object

    @property
    def all(self) -> list:
        return [*self.confirmed, self.unsure, self.disputed, self.contradicted, self.unlabelled, self.unknown]


@pytest.fixture
def waiting(registry, characters) -> Waiting:  # noqa: F811 - imported fixtures
    from apps.characters.models import Character

    newcomer = Character.objects.create(series=characters[RED].series, slug="colors_grey_ghost", name="Grey Ghost")
    confirmed = [ingest(class_image_bytes(label, 40 + i), character=characters[label])
                 for i, label in enumerate(LABELS)]
    return Waiting(
        confirmed=confirmed,
        unsure=ingest(red_green_mix(), character=characters[GREEN]),
        disputed=ingest(red_green_mix(quality=88), character=characters[RED]),
        contradicted=ingest(class_image_bytes(RED, 50), character=characters[GREEN]),
        unlabelled=ingest(class_image_bytes(BLUE, 51), source_kind="crawl", source_site="waifu_pics"),
        unknown=ingest(class_image_bytes(GREEN, 52), character=newcomer, source_kind="upload", source_site=""),
    )


@pytest.fixture
def suggested(waiting):
    """The default model's verdicts on every waiting image."""
    from apps.review.services import suggestions_compute

    result = suggestions_compute(image_ids=[image.pk for image in waiting.all])
    assert result["suggested"] == len(waiting.all), result
    return waiting
