"""The pages through Django's test client: they render for anyone, staff actions are shown to staff
only, and every action goes through its app's service."""
from __future__ import annotations

import gzip

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

PAGES = ["dashboard:home", "inference:predict", "dashboard:dataset", "crawling:list", "training:list", "evaluation:list",
         "inference:models"]


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_for_anyone_without_staff_actions(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="viewport"' in body and "Log in" in body
    assert "Start a crawl" not in body and "Promote" not in body


def test_the_old_json_api_keeps_its_root_paths(client, served_model):
    """The original service's clients call /predict, /predict_batch, /models and /health at the root: each
    answers there with the served model's JSON."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import make_image_bytes

    from .conftest import CHARACTERS

    health = client.get("/health")
    assert health.status_code == 200 and health.json()["ready"] is True
    assert health.json()["default"] == "simple-v1"
    models = client.get("/models")
    assert models.status_code == 200 and models.json()["aliases"] == {"default": "simple-v1"}
    assert [version["name"] for version in models.json()["versions"]] == ["simple-v1"]
    pictures = [make_image_bytes(seed, size=(64, 64)) for seed in (1, 2)]
    one = client.post("/predict", {"file": SimpleUploadedFile("one.png", pictures[0])})
    assert one.status_code == 200, one.content
    answer = one.json()
    assert answer["model"]["version"] == "simple-v1" and answer["filename"] == "one.png"
    assert answer["label"] in CHARACTERS and len(answer["predictions"]) == len(CHARACTERS)
    batch = client.post("/predict_batch", {"files": [SimpleUploadedFile(f"{i}.png", data)
                                                     for i, data in enumerate(pictures)]})
    assert batch.status_code == 200, batch.content
    results = batch.json()["results"]
    assert batch.json()["count"] == 2 and [result["filename"] for result in results] == ["0.png", "1.png"]
    assert results[0]["predictions"] == answer["predictions"]  # the same picture, the same model's answer


def test_log_in_and_out(client, staff_user):
    response = client.post(reverse("login"), {"username": "curator", "password": "pw-curator"})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:home")
    assert "curator" in client.get(reverse("dashboard:home")).content.decode()
    assert client.post(reverse("logout")).status_code == 302
    assert "Log in" in client.get(reverse("dashboard:home")).content.decode()


def test_staff_actions_need_staff(client, viewer, character):
    from apps.crawling.models import CrawlJob

    payload = {"source": "danbooru", "character": character.pk, "quota": 5}
    response = client.post(reverse("crawling:start"), payload)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    client.force_login(viewer)
    assert client.post(reverse("crawling:start"), payload).status_code == 302
    assert "Start a crawl" not in client.get(reverse("crawling:list")).content.decode()
    assert not CrawlJob.objects.exists()


def test_staff_starts_and_cancels_a_crawl(staff_client, staff_user, character):
    from apps.crawling.models import CrawlJob

    assert "Start a crawl" in staff_client.get(reverse("crawling:list")).content.decode()
    response = staff_client.post(reverse("crawling:start"), {"source": "danbooru", "character": character.pk,
                                                          "quota": 5, "query": ""})
    job = CrawlJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("crawling:detail", args=[job.pk])
    assert job.query == "hu_tao" and job.requested_by == staff_user and job.status == "queued"
    detail = staff_client.get(response["Location"]).content.decode()
    assert 'id="crawl-cancel"' in detail and 'data-field="accepted"' in detail
    staff_client.post(reverse("crawling:cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled"
    again = staff_client.post(reverse("crawling:cancel", args=[job.pk]), follow=True).content.decode()
    assert "only queued or running jobs can be cancelled" in again  # the service's refusal, shown on the page


def test_a_crawl_started_with_the_review_options_shows_them_and_its_steps(staff_client, character):
    from apps.crawling.models import CrawlJob

    response = staff_client.post(reverse("crawling:start"), {"source": "danbooru", "character": character.pk,
                                                          "quota": 5, "solo": "true",
                                                          "auto_approve_min_confidence": "0.9"})
    job = CrawlJob.objects.get()
    assert response.status_code == 302 and job.solo is True and job.auto_approve_min_confidence == 0.9
    detail = staff_client.get(response["Location"]).content.decode()
    assert "only solo posts" in detail and "confirms at ≥ 0.90" in detail
    assert [step["name"] for step in job.steps][:1] == ["known"] and "<code>solo</code>" in detail
    refused = staff_client.post(reverse("crawling:start"), {"source": "danbooru", "character": character.pk,
                                                         "quota": 5, "auto_approve_min_confidence": "1.5"})
    assert refused.status_code == 400 and "less than or equal to 1" in refused.content.decode()
    assert CrawlJob.objects.count() == 1


def test_a_refused_crawl_says_why_in_the_form(staff_client, cast):
    slug = next(iter(cast))
    response = staff_client.post(reverse("crawling:start"), {"source": "danbooru", "character": cast[slug].pk,
                                                          "quota": 0})
    assert response.status_code == 400 and "greater than or equal to 1" in response.content.decode()
    # Waifu.pics images carry no label: the service refuses a character, and the form shows its message.
    response = staff_client.post(reverse("crawling:start"), {"source": "waifu_pics", "character": cast[slug].pk,
                                                          "quota": 3})
    assert response.status_code == 400 and "carry no character label" in response.content.decode()


def _training_job(status="queued", run_dir=""):
    from apps.characters.models import DatasetVersion
    from apps.training.models import TrainingJob

    version = DatasetVersion.objects.create(name="v1", content_hash="x" * 64)
    return TrainingJob.objects.create(name="v1 simple", dataset_version=version, status=status,
                                      config={"architecture": "simple", "epochs": 3}, run_dir=str(run_dir))


def test_training_cancel_and_a_refused_resume(staff_client, tmp_path):
    job = _training_job(run_dir=tmp_path / "run")
    page = staff_client.get(reverse("training:detail", args=[job.pk])).content.decode()
    assert 'id="training-cancel"' in page and "architecture" in page
    staff_client.post(reverse("training:cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled"
    page = staff_client.get(reverse("training:detail", args=[job.pk])).content.decode()
    assert 'id="training-resume"' not in page  # no checkpoint, nothing to resume from
    refused = staff_client.post(reverse("training:resume", args=[job.pk]), follow=True).content.decode()
    assert "no checkpoint to resume" in refused


def test_anyone_sees_a_training_job_without_its_buttons(client):
    job = _training_job(status="running")
    page = client.get(reverse("training:detail", args=[job.pk])).content.decode()
    assert "loss-chart" in page and 'id="training-cancel"' not in page
    assert client.post(reverse("training:cancel", args=[job.pk])).status_code == 302
    job.refresh_from_db()
    assert job.status == "running"


def test_dataset_page_counts_per_character(client, cast):
    page = client.get(reverse("dashboard:dataset")).content.decode()
    assert "Hu Tao" in page and "Bocchi the Rock!" in page and "dataset-chart-data" in page
    detail = client.get(reverse("dashboard:character", args=["genshin_hu_tao"])).content.decode()
    assert detail.count("<figure>") == 2


def test_predict_examples_are_approved_pictures(client, cast):
    body = client.get(reverse("inference:predict-examples"), {"characters": "genshin_ganyu,nobody"}).json()["characters"]
    assert body["genshin_ganyu"]["name"] == "Ganyu" and len(body["genshin_ganyu"]["images"]) == 2
    assert body["nobody"]["images"] == []


def test_promote_and_roll_back_from_the_models_page(staff_client, served_model):
    from apps.inference.models import AliasChange, ModelAlias
    from apps.inference.services import model_version_register

    v2 = model_version_register(name="simple-v2", architecture="simple", labels=served_model.labels,
                                input_size=served_model.input_size, normalization=served_model.normalization,
                                artifact=served_model.artifact_path)
    page = staff_client.get(reverse("inference:models")).content.decode()
    assert "Promote" in page and 'data-rollback="default"' in page
    response = staff_client.post(reverse("inference:alias-set"), {"alias": "default", "version": "simple-v2", "why": "better"})
    assert response.status_code == 302
    assert ModelAlias.objects.get(name="default").version == v2
    staff_client.post(reverse("inference:alias-rollback", args=["default"]), {"why": "oops"})
    assert ModelAlias.objects.get(name="default").version == served_model
    assert list(AliasChange.objects.values_list("kind", flat=True)) == ["rollback", "set", "set"]
    history = staff_client.get(reverse("inference:models")).content.decode()
    assert "oops" in history and "better" in history


def test_the_chart_library_is_served_gzipped_and_cached(client):
    from apps.core.charts import plotly_version

    url = reverse("plotly-js", kwargs={"version": plotly_version()})
    response = client.get(url, HTTP_ACCEPT_ENCODING="gzip, br")
    assert response.status_code == 200 and response["Content-Encoding"] == "gzip"
    assert "immutable" in response["Cache-Control"]
    assert b"plotly" in gzip.decompress(response.content)[:2000].lower()
    assert client.get(reverse("plotly-js", kwargs={"version": "0.0.0"})).status_code == 404


def test_evaluation_pages_show_a_real_run(client, evaluated):
    first, second = evaluated
    listing = client.get(reverse("evaluation:list")).content.decode()
    assert f'data-run="{first.pk}"' in listing and "compare-form" in listing
    page = client.get(reverse("evaluation:detail", args=[first.pk])).content.decode()
    assert "accuracy-chart" in page and "evaluation-data" in page and "Hu Tao" in page
    assert "Create collection plan" not in page  # staff only
    compared = client.get(reverse("evaluation:compare"), {"base": first.pk, "other": second.pk})
    assert compared.status_code == 200 and "delta-chart" in compared.content.decode()
    assert client.get(reverse("evaluation:compare"), {"base": "x"}).status_code == 404
    dataset = client.get(reverse("dashboard:dataset")).content.decode()
    assert f"evaluation #{second.pk}" in dataset  # accuracy and tier come from the latest run


def test_training_page_shows_the_weights_the_recipe_and_characters_with_few_images(client, cast, settings):
    """Where the data is tiny the page says so; it shows what the run started from and why, and which
    hyperparameters the recipe filled in."""
    from apps.characters.models import DatasetItem, DatasetVersion, Image
    from apps.training.models import TrainingJob

    settings.KYARA_THIN_CHARACTER_IMAGES = 2
    version = DatasetVersion.objects.create(name="v-thin", content_hash="y" * 64)
    images = list(Image.objects.select_related("character").order_by("id"))
    thin_one = images[0].character
    for image in images:  # the first character keeps one training image, the others two
        if image.character != thin_one or not DatasetItem.objects.filter(version=version, character=thin_one).exists():
            DatasetItem.objects.create(version=version, image=image, character=image.character, split="train")
    job = TrainingJob.objects.create(
        name="thin", dataset_version=version, status="succeeded", config={"epochs": 3, "lr": None, "weights": "auto"},
        weights_used="none", recipe="scratch",
        weights_reason="no ImageNet weights here (not in the weights folder), so it trains from scratch",
        summary={"config": {"epochs": 3, "lr": 0.002, "weights": "auto"}})
    page = client.get(reverse("training:detail", args=[job.pk])).content.decode()
    assert 'id="thin-characters"' in page and thin_one.name in page
    others = {image.character.name for image in images} - {thin_one.name}
    warning = page.split('id="thin-characters"', 1)[1].split("</div>", 1)[0]
    assert not any(name in warning for name in others) and "(1)" in warning
    assert "so it trains from scratch" in page and ">scratch<" in page
    assert "<code>0.002</code> <small class=\"muted\">recipe</small>" in page  # filled in by the recipe
    dataset = client.get(reverse("dashboard:dataset")).content.decode()  # v-thin is the latest version
    flagged = [row for row in dataset.split("<tr data-character=")[1:] if "few images" in row.split("</tr>")[0]]
    assert len(flagged) == 1 and thin_one.slug in flagged[0]
    settings.KYARA_THIN_CHARACTER_IMAGES = 1
    assert 'id="thin-characters"' not in client.get(reverse("training:detail", args=[job.pk])).content.decode()
