"""Fixtures for the pages: a served model made by the platform's own code, users, and headless Chromium.

Browser tests drive Debian's chromium (/usr/bin/chromium) through Playwright's sync API against
pytest-django's live server; each saves a screenshot under var/test/screenshots/.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_image_bytes, require_service
from tests.crawling.conftest import character, crawl_settings, world  # noqa: F401 - fixtures reused

# Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run in a thread with
# one unless told it is safe (it is: the loop only talks to the browser).
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path(os.environ.get("KYARA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SCREENSHOTS = Path(os.environ.get("KYARA_DATA_DIR", ROOT / "var" / "test")) / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

CHARACTERS = {  # slug → (name, series)
    "genshin_hu_tao": ("Hu Tao", "Genshin Impact"),
    "genshin_ganyu": ("Ganyu", "Genshin Impact"),
    "bocchi_hitori_gotoh": ("Hitori Gotoh", "Bocchi the Rock!"),
}


@pytest.fixture
def viewer(django_user_model):
    return django_user_model.objects.create_user("viewer", password="pw-viewer")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def cast(db):
    """Three characters in two series, each with two approved pictures (the predict page shows them)."""
    from apps.characters.models import Character, Image, Series
    from apps.characters.services import image_ingest

    made = {}
    for index, (slug, (name, series_name)) in enumerate(CHARACTERS.items()):
        series, _ = Series.objects.get_or_create(slug=series_name.split()[0].lower(), defaults={"name": series_name})
        made[slug] = Character.objects.create(series=series, slug=slug, name=name,
                                              booru_tags={"danbooru": f"{slug}_tag"})
        for seed in range(2):
            result = image_ingest(data=make_image_bytes(100 + index * 10 + seed, size=(128, 128)),
                                  source_kind=Image.SourceKind.UPLOAD, character=made[slug],
                                  status=Image.Status.APPROVED, original_name=f"{slug}-{seed}.png")
            assert result.accepted, result.message
    return made


@pytest.fixture
def served_model(cast, settings):
    """A real ``simple`` model over the cast's labels (untrained weights: the page, not the accuracy, is
    under test), saved as a serving artifact, registered, and promoted to ``default``."""
    import torch

    from apps.inference.loading import predictor_cache
    from apps.inference.services import model_alias_set, model_version_register
    from apps.ml.architectures import architectures
    from apps.ml.artifacts import save_serving_artifact

    settings.KYARA_ALIAS_WATCH_SECONDS = 0  # no watcher thread outlives the test
    settings.KYARA_INFERENCE_BACKEND = "torch"  # no ONNX export per load: the tests stay quick
    settings.KYARA_EVAL_LATENCY_IMAGES = 5
    predictor_cache.clear()
    arch = architectures.get("simple")
    labels = list(CHARACTERS)
    folder = Path(settings.ARTIFACTS_DIR) / f"test-dashboard-{os.getpid()}"

    def make(name: str, seed: int):
        torch.manual_seed(seed)
        path = save_serving_artifact(folder / f"{name}.pt", model=arch.build(len(labels), weights="none"),
                                     architecture="simple", labels=labels, input_size=arch.input_size,
                                     normalization=arch.normalization)
        return model_version_register(name=name, architecture="simple", labels=labels, input_size=arch.input_size,
                                      normalization=arch.normalization, artifact=path,
                                      metrics={"accuracy": 0.5, "mean_class_accuracy": 0.41})

    version = make("simple-v1", 0)
    model_alias_set(name="default", version=version, why="first model")
    version.make_another = make
    yield version
    predictor_cache.clear()
    shutil.rmtree(folder, ignore_errors=True)


# --- The browser --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    require_service("Chromium", CHROMIUM.is_file(), f"no {CHROMIUM}; scripts/ensure_chromium.sh installs Debian's")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class Session:
    """One browser context on the live server, optionally logged in; collects the page's JS errors."""

    def __init__(self, browser, live_server, *, user=None, phone=False):
        viewport = PHONE if phone else DESKTOP
        self.context = browser.new_context(viewport=viewport, device_scale_factor=1, is_mobile=phone,
                                           has_touch=phone)
        self.context.set_default_timeout(15_000)
        self.base = live_server.url
        if user is not None:
            from django.conf import settings
            from django.test import Client

            client = Client()
            client.force_login(user)
            self.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": self.base,
                                       "value": client.cookies[settings.SESSION_COOKIE_NAME].value}])
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)

    def open(self, path: str):
        self.page.goto(self.base + path)
        return self.page

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_no_js_errors(self):
        assert not self.errors, self.errors

    def assert_fits_width(self):
        """Nothing but the scrollable tables is wider than the screen (usable on a phone)."""
        overflow = self.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than the screen"


@pytest.fixture
def session(browser, live_server):
    opened = []

    def _open(*, user=None, phone=False) -> Session:
        made = Session(browser, live_server, user=user, phone=phone)
        opened.append(made)
        return made

    yield _open
    for made in opened:
        made.context.close()


@pytest.fixture
def evaluated(served_model, cast):
    """A frozen dataset version of the cast and two real evaluation runs on its test split (two models),
    made by the characters and evaluation apps' services."""
    from apps.characters.models import Image
    from apps.characters.services import dataset_version_freeze, image_ingest
    from apps.evaluation.services import evaluation_run_create, evaluation_run_execute

    for index, person in enumerate(cast.values()):
        for seed in range(8):
            image_ingest(data=make_image_bytes(500 + index * 40 + seed, size=(112, 112)), status=Image.Status.APPROVED,
                         source_kind=Image.SourceKind.UPLOAD, character=person)
    version = dataset_version_freeze(name="anime-v1", val=0.2, test=0.4, min_images=6)
    other = served_model.make_another("simple-v2", 1)
    runs = []
    for model in (served_model, other):
        run = evaluation_run_create(model_version=model, dataset_version=version, split="test", queue=False)
        runs.append(evaluation_run_execute(run_id=run.pk))
    assert all(run.status == "succeeded" for run in runs), [run.error for run in runs]
    return runs
