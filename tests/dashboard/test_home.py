"""The home page: on an empty installation a first-run guide whose steps (import, freeze, train, serve) open one
after the other, with the real forms; once a model is default, where the improvement loop stands."""
from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import make_image_bytes
from tests.evaluation.conftest import (  # _fast_serving: autouse here too (eager PyTorch, no alias watcher)
    _fast_serving,  # noqa: F401
    make_characters,
    make_version,
    register_rigged,
)

pytestmark = pytest.mark.django_db


def step(body: str, name: str) -> str:
    """The markup of one step of the guide."""
    found = re.search(rf'<li class="([^"]*)" id="step-{name}"[^>]*>(.*?)</li>', body, re.S)
    assert found, f"no step {name}"
    return found.group(0)


def classes(body: str, name: str) -> set[str]:
    return set(re.search(rf'<li class="([^"]*)" id="step-{name}"', body).group(1).split())


def test_an_empty_installation_gets_a_guide_whose_first_step_is_the_import_form(staff_client):
    body = staff_client.get(reverse("dashboard:home")).content.decode()
    assert 'id="first-run"' in body and 'id="loop"' not in body
    assert 'id="import-form"' in step(body, "import") and 'enctype="multipart/form-data"' in step(body, "import")
    for later in ("freeze", "train", "promote"):
        assert "waiting" in classes(body, later)
    assert 'id="guide-freeze-form"' not in body and 'id="guide-train"' not in body and 'id="guide-promote"' not in body
    anonymous = Client().get(reverse("dashboard:home")).content.decode()
    assert 'id="first-run"' in anonymous and "logs in" in anonymous
    assert 'id="import-form"' not in anonymous and "Promote" not in anonymous


def test_each_step_opens_once_the_one_before_is_done(staff_client, staff_user):
    from apps.characters.models import DatasetVersion, Image
    from apps.characters.services import character_get_or_create, image_ingest, series_get_or_create

    series = series_get_or_create(slug="genshin_impact")
    for index, name in enumerate(("Hu Tao", "Ganyu")):
        character = character_get_or_create(series=series, name=name)
        for seed in range(6):
            image_ingest(data=make_image_bytes(4000 + 20 * index + seed, size=(80, 80)), character=character,
                         source_kind=Image.SourceKind.UPLOAD, status=Image.Status.APPROVED)
    body = staff_client.get(reverse("dashboard:home")).content.decode()
    assert "done" in classes(body, "import") and "12 images of 2 characters" in step(body, "import")
    freeze = step(body, "freeze")
    assert "waiting" not in classes(body, "freeze") and 'id="guide-freeze-form"' in freeze
    assert 'value="v1"' in freeze and "waiting" in classes(body, "train")
    # The guide's freeze button sends the freeze form's defaults through the freeze service.
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', freeze))
    fields.pop("csrfmiddlewaretoken")
    assert fields == {"val": "0.15", "test": "0.15", "seed": "0", "min_images": "6"}
    response = staff_client.post(reverse("characters:freeze"), {**fields, "name": "v1"})
    assert response.status_code == 302
    version = DatasetVersion.objects.get()
    assert version.created_by == staff_user and version.num_images == 12
    body = staff_client.get(reverse("dashboard:home")).content.decode()
    assert "done" in classes(body, "freeze") and "<strong>v1</strong>: 12 images" in step(body, "freeze")
    train = step(body, "train")
    link = f'{reverse("training:list")}?version={version.pk}#training-start'
    assert f'href="{link}"' in train and "waiting" not in classes(body, "train")
    assert "waiting" in classes(body, "promote")
    # The training page opens with that version chosen.
    page = staff_client.get(link.split("#")[0]).content.decode()
    assert f'<option value="{version.pk}" selected>v1</option>' in page


def test_promote_from_the_guide_then_see_where_the_loop_stands(staff_client):
    from apps.characters.models import Image
    from apps.characters.services import image_ingest
    from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
    from apps.inference.models import ModelAlias

    characters = make_characters(["char-0", "char-1", "char-2"])
    version = make_version("v-home", characters)
    model = register_rigged("first", [c.slug for c in characters], [3.0, 0.0, 0.0], dataset_version=version)
    body = staff_client.get(reverse("dashboard:home")).content.decode()
    promote = step(body, "promote")
    assert "waiting" not in classes(body, "promote") and 'id="guide-promote"' not in promote
    assert f'href="{reverse("evaluation:list")}#evaluation-start"' in promote  # not evaluated yet
    run = evaluation_run_create(model_version=model, dataset_version=version, split="test", queue=False)
    evaluation_run_execute(run_id=run.pk)
    promote = step(staff_client.get(reverse("dashboard:home")).content.decode(), "promote")
    assert f'action="{reverse("evaluation:promote", args=[run.pk])}"' in promote and "top-1 33.3%" in promote
    staff_client.post(reverse("evaluation:promote", args=[run.pk]))
    assert ModelAlias.objects.get(name="default").version == model

    for seed in range(2):  # pictures a crawl brought, waiting for a person
        image_ingest(data=make_image_bytes(9000 + seed, size=(80, 80)), character=characters[1],
                     source_kind=Image.SourceKind.CRAWL, status=Image.Status.PENDING)
    body = Client().get(reverse("dashboard:home")).content.decode()  # anyone sees where the loop stands
    assert 'id="first-run"' not in body and 'id="loop"' in body
    review = re.search(r'<div id="loop-review">(.*?)</div>', body, re.S).group(1)
    assert "<strong>2</strong> images pending" in review and 'href="/ui/review/"' in review
    default = re.search(r'<div id="loop-default">(.*?)</div>', body, re.S).group(1)
    assert "<strong>first</strong>: top-1 33.3%, mean per class 33.3% on v-home/test" in default
    assert "Latest: <strong>v-home</strong>" in body
    weakest = re.findall(r'<tr data-character="([^"]+)">', body)
    assert weakest == ["char-1", "char-2", "char-0"]  # never recognised first, then by name; char-0 always right
