"""Fixtures for the pages: a served model made by the platform's own code, users, and headless Chromium.

Browser tests drive Debian's chromium (/usr/bin/chromium) through Playwright's sync API against
pytest-django's live server; each saves a screenshot under var/test/screenshots/.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_image_bytes, wait_for
from tests.crawling.conftest import character, crawl_settings, world  # noqa: F401 - fixtures reused

# Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run in a thread with
# one unless told it is safe (it is: the loop only talks to the browser).
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

_DATA = Path(os.environ.get("KYARA_DATA_DIR", ROOT / "var" / "test"))
# Under pytest-xdist the data folder is the worker's (config/settings/test.py); screenshots stay in one place.
SCREENSHOTS = (_DATA.parent if os.environ.get("KYARA_TEST_WORKER_DIR") else _DATA) / "screenshots"
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


# --- The browser (one Chromium for the whole session: tests/conftest.py's ``browser``) -------------

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


# --- The first loop in the browser --------------------------------------------------------------

# The workers' settings (child processes): eager PyTorch, no runtime measuring at registration, one thread.
LOOP_WORKER_ENV = {"KYARA_INFERENCE_BACKEND": "torch", "KYARA_RUNTIME_CHOOSE_ON_REGISTER": "0",
                   "KYARA_TRAINING_THREADS": "1", "KYARA_EVAL_LATENCY_IMAGES": "3", "KYARA_ALIAS_WATCH_SECONDS": "0"}


def refused_once(browser: Session, times: int) -> None:
    """The page just met ``times`` deliberate 400s (a bad form, a preview of a freeze that cannot be): the
    browser logs each as a failed resource; nothing else went wrong."""
    assert browser.errors == ["console: Failed to load resource: the server responded with a status of 400 "
                              "(Bad Request)"] * times, browser.errors
    browser.errors.clear()


def loop_zip(path: Path) -> None:
    """Two characters of one series, ten distinct 64 px pictures each, in a zipped parent folder."""
    with zipfile.ZipFile(path, "w") as archive:
        for index, name in enumerate(("Hu Tao", "Ganyu")):
            for i in range(10):
                archive.writestr(f"anime/genshin_impact_{name}/{i}.png",
                                 make_image_bytes(6000 + 100 * index + i, size=(64, 64)))
    assert path.stat().st_size > 0


@dataclass
class LoopDone:
    """What the first loop made: the browser's session, the frozen version, the training job whose model is
    default now, and default's two evaluations (the person's on val, the automatic one on test)."""
    browser: Session
    version: object
    job: object
    val_run: object
    test_run: object


class FirstLoop:
    """A staff user's first loop in Chromium: import a zip, freeze, train (1 epoch, 32 px), evaluate, promote.

    The caller runs the workers (``running_qcluster(..., **first_loop.worker_env)``, with settings of its own
    beside), then ``run()``; each stage leaves a screenshot ``<shots>-<n>-<stage>.png``."""

    def __init__(self, session, user, settings, folder: Path) -> None:
        self.session, self.user = session, user
        settings.KYARA_IMPORT_INLINE_MAX_BYTES = 0  # every zip goes to the worker, as a big one would
        settings.KYARA_IMPORTS_DIR = folder / "imports"
        for name, value in LOOP_WORKER_ENV.items():  # this process (the live server) promotes: it loads the model
            setattr(settings, name, int(value) if value.isdigit() else value)
        self.worker_env = {**LOOP_WORKER_ENV, "KYARA_IMPORTS_DIR": str(settings.KYARA_IMPORTS_DIR)}
        self.archive = folder / "anime.zip"
        loop_zip(self.archive)

    def run(self, shots: str = "loop") -> LoopDone:
        from apps.characters.models import DatasetVersion, Image, ImportJob
        from apps.evaluation.models import EvaluationRun
        from apps.inference.models import AliasChange, ModelAlias
        from apps.training.models import TrainingJob

        browser = self.session(user=self.user)
        page = browser.open("/")
        assert page.locator("#step-freeze").get_attribute("class") == "step waiting"
        browser.screenshot(f"{shots}-0-first-run")

        # 1. Import the zip: queued, then the worker imports it while the page follows.
        page.set_input_files("#id_archive", str(self.archive))
        page.click("#import-submit")
        page.wait_for_url(lambda url: "/ui/dataset/imports/" in url and url.rstrip("/").split("/")[-1].isdigit())
        page.locator("#import-summary").wait_for(timeout=120_000)
        assert page.locator("#import-new").inner_text() == "20"
        assert Image.objects.filter(status="approved").count() == 20 and ImportJob.objects.get().status == "succeeded"
        browser.screenshot(f"{shots}-1-imported")

        # 2. Freeze, after looking at the preview: the leak report and what the version brings.
        page.click("#next-freeze")
        page.locator("#preview-result").wait_for()
        assert page.locator("#preview-result .leak-report").get_attribute("data-leaks") == "0"
        assert "The first version: every image is new." in page.locator("#preview-result").inner_text()
        page.fill("#id_min_images", "50")  # the preview follows the form: nobody has 50
        page.locator("#preview-error").wait_for()
        assert "No active character has 50" in page.locator("#preview-error").inner_text()
        refused_once(browser, 1)
        page.fill("#id_min_images", "6")
        page.locator("#preview-result").wait_for()
        browser.screenshot(f"{shots}-2-freeze-preview")
        page.click("#freeze-submit")
        page.wait_for_url(lambda url: url.endswith("/ui/dataset/#latest-version"))
        version = DatasetVersion.objects.get()
        assert page.locator("#latest-version [data-version]").get_attribute("data-version") == version.name == "v1"
        assert page.locator("#latest-version .leak-report").get_attribute("data-leaks") == "0"
        browser.screenshot(f"{shots}-3-frozen")

        # 3. Train from the guide's link: a wrong setting first (shown next to it), then 1 epoch at 32 px.
        page = browser.open("/")
        assert "done" in page.locator("#step-freeze").get_attribute("class")
        page.click("#guide-train")
        page.wait_for_url(lambda url: f"/ui/training/?version={version.pk}" in url)
        assert page.locator("#id_dataset_version").input_value() == str(version.pk)
        page.select_option("#id_architecture", "simple")
        page.fill("#id_epochs", "1")
        page.fill("#id_image_size", "8")
        page.click("#training-advanced summary")
        for field, value in (("batch_size", "16"), ("workers", "0"), ("threads", "1")):
            page.fill(f"#id_{field}", value)
        page.select_option("#id_refit", "false")
        page.click("#training-submit")
        image_size = page.locator(".field", has=page.locator("#id_image_size"))
        assert "image_size must be between 16 and 1024 pixels, got 8" in image_size.locator(".errorlist").inner_text()
        assert not TrainingJob.objects.exists()
        refused_once(browser, 1)
        browser.screenshot(f"{shots}-4-training-refused")
        page.fill("#id_image_size", "32")
        page.click("#training-submit")
        page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1].isdigit())
        job = TrainingJob.objects.get()
        assert (job.config["epochs"], job.config["image_size"], job.config["architecture"]) == (1, 32, "simple")
        page.locator(".status-succeeded").first.wait_for(timeout=300_000)
        page.wait_for_selector("#live-flag", state="hidden")  # reloaded: the finished job's page
        job.refresh_from_db()
        assert job.status == "succeeded" and job.model_version is not None, job.error
        browser.screenshot(f"{shots}-5-trained")

        # 4. Evaluate the new model on v1's val split from the evaluation page, and wait for it.
        page = browser.open("/ui/evaluations/")
        page.select_option("#id_model_version", str(job.model_version.pk))
        page.select_option("#id_dataset_version", str(version.pk))
        page.select_option("#id_split", "val")
        page.click("#evaluation-submit")
        page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1].isdigit())
        run = EvaluationRun.objects.filter(split="val").get()
        page.locator("#promotion").wait_for(timeout=180_000)  # shown once the run finished (the page reloads)
        run.refresh_from_db()
        assert run.status == "succeeded", run.error
        assert "would be the first" in page.locator("#promotion-reason").inner_text()
        browser.screenshot(f"{shots}-6-evaluated")

        # 5. Promote it: the first default.
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#promote")
        page.locator(".msg.success").wait_for()
        assert f"{job.model_version.name} is default now" in page.locator(".msg.success").inner_text()
        assert ModelAlias.objects.get(name="default").version == job.model_version
        assert AliasChange.objects.get().actor == self.user
        assert "already" in page.locator("#promotion-reason").inner_text()
        browser.screenshot(f"{shots}-7-promoted")

        # 6. Home: where the loop stands, with default's numbers on the test split (its evaluation after training).
        test_run = wait_for(lambda: EvaluationRun.objects.filter(split="test", status="succeeded").first(),
                            timeout=180, message="the automatic evaluation after training")
        page = browser.open("/")
        page.locator("#loop").wait_for()
        assert page.locator("#first-run").count() == 0
        default = page.locator("#loop-default").inner_text()
        assert job.model_version.name in default and "on v1/test" in default
        assert page.locator("#weakest-table tbody tr").count() == 2
        browser.screenshot(f"{shots}-8-home")
        return LoopDone(browser=browser, version=version, job=job, val_run=run, test_run=test_run)


@pytest.fixture
def first_loop(session, staff_user, settings, tmp_path, transactional_db) -> FirstLoop:
    return FirstLoop(session, staff_user, settings, tmp_path)
