"""The whole first loop in real headless Chromium against the live server, with real qcluster workers: a staff
user imports a zip from the browser, freezes a version, starts a training run (1 epoch, 32 px), evaluates the
model and promotes it to default. Each stage leaves a screenshot under var/test/screenshots/loop-*.png."""
from __future__ import annotations

import zipfile

import pytest

from tests.conftest import make_image_bytes, running_qcluster, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The workers' settings (child processes): eager PyTorch, no runtime measuring at registration, one thread.
WORKER_ENV = {"KYARA_INFERENCE_BACKEND": "torch", "KYARA_RUNTIME_CHOOSE_ON_REGISTER": "0",
              "KYARA_TRAINING_THREADS": "1", "KYARA_EVAL_LATENCY_IMAGES": "3", "KYARA_ALIAS_WATCH_SECONDS": "0"}


def refused_once(browser, times: int) -> None:
    """The page just met ``times`` deliberate 400s (a bad form, a preview of a freeze that cannot be): the
    browser logs each as a failed resource; nothing else went wrong."""
    assert browser.errors == ["console: Failed to load resource: the server responded with a status of 400 "
                              "(Bad Request)"] * times, browser.errors
    browser.errors.clear()


def loop_zip(path) -> None:
    """Two characters of one series, ten distinct 64 px pictures each, in a zipped parent folder."""
    with zipfile.ZipFile(path, "w") as archive:
        for index, name in enumerate(("Hu Tao", "Ganyu")):
            for i in range(10):
                archive.writestr(f"anime/genshin_impact_{name}/{i}.png",
                                 make_image_bytes(6000 + 100 * index + i, size=(64, 64)))
    assert path.stat().st_size > 0


def test_import_freeze_train_evaluate_promote_from_the_browser(session, staff_user, settings, tmp_path,
                                                               transactional_db):
    from apps.characters.models import DatasetVersion, Image, ImportJob
    from apps.evaluation.models import EvaluationRun
    from apps.inference.models import AliasChange, ModelAlias
    from apps.training.models import TrainingJob

    settings.KYARA_IMPORT_INLINE_MAX_BYTES = 0  # every zip goes to the worker, as a big one would
    settings.KYARA_IMPORTS_DIR = tmp_path / "imports"
    for name, value in WORKER_ENV.items():  # this process (the live server) promotes: it loads the model too
        setattr(settings, name, int(value) if value.isdigit() else value)
    archive = tmp_path / "anime.zip"
    loop_zip(archive)

    with running_qcluster("qcluster-loop.log", KYARA_IMPORTS_DIR=str(settings.KYARA_IMPORTS_DIR), **WORKER_ENV):
        browser = session(user=staff_user)
        page = browser.open("/")
        assert page.locator("#step-freeze").get_attribute("class") == "step waiting"
        browser.screenshot("loop-0-first-run")

        # 1. Import the zip: queued, then the worker imports it while the page follows.
        page.set_input_files("#id_archive", str(archive))
        page.click("#import-submit")
        page.wait_for_url(lambda url: "/ui/dataset/imports/" in url and url.rstrip("/").split("/")[-1].isdigit())
        page.locator("#import-summary").wait_for(timeout=120_000)
        assert page.locator("#import-new").inner_text() == "20"
        assert Image.objects.filter(status="approved").count() == 20 and ImportJob.objects.get().status == "succeeded"
        browser.screenshot("loop-1-imported")

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
        browser.screenshot("loop-2-freeze-preview")
        page.click("#freeze-submit")
        page.wait_for_url(lambda url: url.endswith("/ui/dataset/#latest-version"))
        version = DatasetVersion.objects.get()
        assert page.locator("#latest-version [data-version]").get_attribute("data-version") == version.name == "v1"
        assert page.locator("#latest-version .leak-report").get_attribute("data-leaks") == "0"
        browser.screenshot("loop-3-frozen")

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
        browser.screenshot("loop-4-training-refused")
        page.fill("#id_image_size", "32")
        page.click("#training-submit")
        page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1].isdigit())
        job = TrainingJob.objects.get()
        assert (job.config["epochs"], job.config["image_size"], job.config["architecture"]) == (1, 32, "simple")
        page.locator(".status-succeeded").first.wait_for(timeout=300_000)
        page.wait_for_selector("#live-flag", state="hidden")  # reloaded: the finished job's page
        job.refresh_from_db()
        assert job.status == "succeeded" and job.model_version is not None, job.error
        browser.screenshot("loop-5-trained")

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
        browser.screenshot("loop-6-evaluated")

        # 5. Promote it: the first default.
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#promote")
        page.locator(".msg.success").wait_for()
        assert f"{job.model_version.name} is default now" in page.locator(".msg.success").inner_text()
        assert ModelAlias.objects.get(name="default").version == job.model_version
        assert AliasChange.objects.get().actor == staff_user
        assert "already" in page.locator("#promotion-reason").inner_text()
        browser.screenshot("loop-7-promoted")

        # 6. Home: where the loop stands, with default's numbers on the test split (its evaluation after training).
        wait_for(lambda: EvaluationRun.objects.filter(split="test", status="succeeded").exists(), timeout=180,
                 message="the automatic evaluation after training")
        page = browser.open("/")
        page.locator("#loop").wait_for()
        assert page.locator("#first-run").count() == 0
        default = page.locator("#loop-default").inner_text()
        assert job.model_version.name in default and "on v1/test" in default
        assert page.locator("#weakest-table tbody tr").count() == 2
        browser.screenshot("loop-8-home")
        browser.assert_no_js_errors()
