"""The pages in real headless Chromium against the live server and real data made by the platform.

Each test saves a screenshot under var/test/screenshots/ (looked at by a person after a change)."""
from __future__ import annotations

import threading

import pytest

from tests.conftest import make_image_bytes, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_upload_an_image_and_see_the_prediction(session, served_model, tmp_path):
    picture = tmp_path / "mystery.png"
    picture.write_bytes(make_image_bytes(7, size=(160, 160)))
    browser = session()
    page = browser.open("/ui/predict/")
    assert page.locator("#predict-model").input_value() == "default"
    page.set_input_files("#predict-files", str(picture))
    result = page.locator("article.result")
    result.wait_for()
    bars = result.locator(".prob-row")
    assert bars.count() == 3  # top-k over the three labels
    names = {"Hu Tao", "Ganyu", "Hitori Gotoh"}
    assert result.locator(".label").inner_text().strip() in names
    assert "simple-v1" in result.inner_text() and "(default)" in result.inner_text()
    total = sum(float(t.rstrip("%")) for t in bars.locator(".p").all_inner_texts())
    assert 99 <= total <= 101
    result.locator(".examples img").first.wait_for()  # training pictures of the predicted character
    assert result.locator(".examples img").count() == 2
    # The picture really loads (waits for it, bounded): a broken URL never gets a natural width.
    page.wait_for_function("() => { const img = document.querySelector('.examples img');"
                           " return img && img.complete && img.naturalWidth > 0; }", timeout=15_000)
    browser.screenshot("predict-desktop")
    browser.assert_no_js_errors()


def test_predict_several_images_on_a_phone(session, served_model, tmp_path):
    files = []
    for seed in range(3):
        path = tmp_path / f"p{seed}.png"
        path.write_bytes(make_image_bytes(20 + seed, size=(120, 140)))
        files.append(str(path))
    browser = session(phone=True)
    page = browser.open("/ui/predict/")
    page.set_input_files("#predict-files", files)
    wait_for(lambda: page.locator("article.result").count() == 3, timeout=20, message="three results")
    assert "3 images predicted" in page.locator("#predict-status").inner_text()
    page.locator(".examples img").first.wait_for()
    browser.assert_fits_width()
    browser.screenshot("predict-phone")
    browser.assert_no_js_errors()


def test_start_a_crawl_and_watch_its_counters_move(session, staff_user, character, crawl_settings, world):
    """The page starts the job through the crawling service; a worker thread runs it against the fake
    booru on 127.0.0.1 (slow and endless), and the page's counters move until it is cancelled there."""
    from apps.crawling.models import CrawlJob
    from apps.crawling.services import crawl_job_run

    world.posts = []
    world.endless = True
    world.image_delay = 0.25
    browser = session(user=staff_user)
    page = browser.open("/ui/crawls/")
    page.select_option("#id_source", "danbooru")
    page.select_option("#id_character", str(character.pk))
    page.fill("#id_quota", "500")
    page.click("#crawl-start-form button[type=submit]")
    page.wait_for_url("**/ui/crawls/*/")
    job = CrawlJob.objects.get()
    assert page.url.endswith(f"/ui/crawls/{job.pk}/") and job.query == "hu_tao"

    worker = threading.Thread(target=crawl_job_run, kwargs={"job_id": job.pk}, daemon=True)
    worker.start()
    accepted = page.locator("#counter-accepted")
    wait_for(lambda: int(accepted.inner_text()) >= 2, timeout=30, message="the accepted counter to move")
    first = int(accepted.inner_text())
    wait_for(lambda: int(accepted.inner_text()) > first, timeout=30, message="the counter to keep moving")
    assert page.locator("[data-status]").first.inner_text() == "running"
    assert int(page.locator("#counter-downloaded").inner_text()) >= first
    browser.screenshot("crawl-running")

    page.click("#crawl-cancel")
    worker.join(timeout=15)
    assert not worker.is_alive()
    page.locator("[data-status].status-cancelled").first.wait_for()
    assert CrawlJob.objects.get().status == "cancelled"
    page.locator("#crawl-retry").wait_for()  # the page reloads when the job ends: a cancelled job can be retried
    browser.screenshot("crawl-cancelled")

    listing = session(phone=True)
    listing.open("/ui/crawls/?character=hu-tao")
    assert listing.page.locator(f"tr[data-job='{job.pk}'] [data-status]").inner_text() == "cancelled"
    assert listing.page.locator("#crawl-start").count() == 0  # not staff: no start form
    listing.assert_fits_width()
    listing.screenshot("crawl-list-phone")
    browser.assert_no_js_errors()
    listing.assert_no_js_errors()


def test_a_live_page_gone_back_to_reads_the_api_from_the_server(session, staff_user, character):
    """Chromium answers a back/forward load's requests from its HTTP cache where it can: a job's page came back
    with the numbers of when it was left, from its first poll (a cycle's page: the images that waited then)."""
    from apps.crawling.models import CrawlJob

    api_reads = "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/crawl-jobs/'))"
    job = CrawlJob.objects.create(source="danbooru", character=character, quota=50, status="running", accepted=1)
    browser = session(user=staff_user)
    page = browser.open(f"/ui/crawls/{job.pk}/")
    page.wait_for_function(f"() => {api_reads}.length > 0")  # polled once: the browser holds that answer
    page.goto(browser.base + "/")
    CrawlJob.objects.filter(pk=job.pk).update(accepted=7)
    page.go_back()
    page.wait_for_function(f"() => {api_reads}.length > 0")
    assert page.evaluate(f"{api_reads}.map(e => e.deliveryType)")[0] != "cache"
    page.wait_for_function("() => document.getElementById('counter-accepted').textContent === '7'", timeout=5_000)
    browser.assert_no_js_errors()


def _epoch(n: int) -> dict:
    return {"epoch": n, "train_loss": 1.6 / n, "train_accuracy": min(0.35 + 0.12 * n, 0.99),
            "val_loss": 1.8 / n + 0.1, "val_accuracy": min(0.3 + 0.1 * n, 0.95), "lr": 1e-4 / n, "seconds": 3.5,
            "images_per_second": 410.0}


def test_open_a_training_job_and_see_its_curves_grow(session, staff_user, cast, tmp_path):
    from django.utils import timezone

    from apps.characters.models import DatasetVersion
    from apps.training.models import TrainingJob
    from apps.training.services import training_job_record_epochs

    version = DatasetVersion.objects.create(name="anime-v1", content_hash="a" * 64)
    job = TrainingJob.objects.create(
        name="anime-v1 simple #1", dataset_version=version, status=TrainingJob.Status.RUNNING, device="cpu",
        precision="fp32", progress=0.3, run_dir=str(tmp_path / "run"), started_at=timezone.now(),
        heartbeat_at=timezone.now(), config={"architecture": "simple", "epochs": 10, "batch_size": 32, "lr": 1e-4},
        launch_token="a" * 32)  # the process that holds the job: only it may write its epochs
    training_job_record_epochs(job=job, rows=[_epoch(n) for n in (1, 2, 3)])

    browser = session(user=staff_user)
    page = browser.open(f"/ui/training/{job.pk}/")
    page.locator("#loss-chart .main-svg").first.wait_for()
    points = "id => document.getElementById(id).data.map(trace => trace.x.length)"
    assert page.evaluate(points, "loss-chart") == [3, 3]
    assert page.evaluate(points, "accuracy-chart") == [3, 3]
    assert page.locator("#training-cancel").is_visible()

    training_job_record_epochs(job=job, rows=[_epoch(n) for n in (4, 5)])  # the process reports two more
    wait_for(lambda: page.evaluate(points, "loss-chart") == [5, 5], timeout=15, message="the curve to grow")
    assert page.locator("[data-field=epochs_run]").inner_text() == "5"
    assert page.locator("#epoch-table tbody tr").count() == 5
    browser.screenshot("training-running")

    TrainingJob.objects.filter(pk=job.pk).update(status=TrainingJob.Status.SUCCEEDED, progress=1.0,
                                                 stop_reason=TrainingJob.StopReason.EARLY_STOPPING, test_accuracy=0.71)
    page.locator(".status-succeeded").first.wait_for()
    page.wait_for_selector("#live-flag", state="hidden")  # reloaded: no longer live, no cancel button
    assert page.locator("#training-cancel").count() == 0 and "early stopping" in page.inner_text("body")

    phone = session(phone=True)
    phone.open(f"/ui/training/{job.pk}/")
    phone.page.locator("#accuracy-chart .main-svg").first.wait_for()
    phone.assert_fits_width()
    phone.screenshot("training-phone")
    phone.open("/ui/training/")
    assert phone.page.locator(f"tr[data-job='{job.pk}']").is_visible()
    phone.screenshot("training-list-phone")
    browser.assert_no_js_errors()
    phone.assert_no_js_errors()


def test_open_an_evaluation_and_see_its_charts(session, staff_user, evaluated):
    first, second = evaluated
    browser = session(user=staff_user)
    page = browser.open(f"/ui/evaluations/{first.pk}/")
    for chart in ("accuracy-chart", "confusion-chart", "calibration-chart", "history-chart"):
        page.locator(f"#{chart} .main-svg").first.wait_for()
    measured = first.characters.filter(support__gt=0).count()
    bars = page.evaluate("document.getElementById('accuracy-chart').data[0]")
    assert len(bars["x"]) == measured and bars["x"] == sorted(bars["x"])  # sorted, worst first
    assert len(set(bars["marker"]["color"])) >= 1 and all(c.startswith("#") for c in bars["marker"]["color"])
    heatmap = page.evaluate("document.getElementById('confusion-chart').data[0]")
    assert heatmap["type"] == "heatmap" and len(heatmap["z"]) == len(first.labels)
    history = page.evaluate("document.getElementById('history-chart').data[0]")
    assert len(history["x"]) == 2 and page.locator("#history-versions li").count() == 1  # both runs, one version
    assert page.locator("#character-table tbody tr").count() == len(first.labels)
    assert page.locator("#plan-create").is_visible()  # staff may turn tiers into crawl jobs
    browser.screenshot("evaluation-desktop")

    page.click("#compare-with button[type=submit]")
    page.wait_for_url("**/ui/evaluations/compare/**")
    page.locator("#delta-chart .main-svg").first.wait_for()
    assert page.locator("#compare-table tbody tr").count() >= 1
    browser.screenshot("evaluation-compare")

    phone = session(phone=True)
    phone.open(f"/ui/evaluations/{second.pk}/")
    phone.page.locator("#confusion-chart .main-svg").first.wait_for()
    assert phone.page.locator("#plan-create").count() == 0
    phone.assert_fits_width()
    phone.screenshot("evaluation-phone")
    phone.open("/ui/dataset/")
    assert phone.page.locator("tr[data-character='genshin_hu_tao'] .tier").count() == 1
    phone.screenshot("dataset-phone")
    browser.assert_no_js_errors()
    phone.assert_no_js_errors()


def test_log_in_promote_roll_back_and_log_out(session, staff_user, served_model):
    other = served_model.make_another("simple-v2", 1)
    browser = session()
    page = browser.open("/ui/models/")
    assert page.locator("#alias-set-form").count() == 0 and page.locator("[data-rollback]").count() == 0
    page.click("text=Log in")
    page.fill("#id_username", "curator")
    page.fill("#id_password", "pw-curator")
    page.click("form button[type=submit]")
    page.wait_for_url("**/ui/models/")  # back where the person was
    assert "curator" in page.inner_text("header")

    page.fill("#id_alias", "default")
    page.select_option("#id_version", other.name)
    page.fill("#id_why", "better on val")
    page.click("#alias-set-form button[type=submit]")
    page.locator(".msg.success").wait_for()
    assert page.locator("tr[data-alias='default'] td").nth(1).inner_text() == "simple-v2"
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("[data-rollback='default']")
    page.locator(".msg.success >> text=rolled back").wait_for()
    assert page.locator("tr[data-alias='default'] td").nth(1).inner_text() == "simple-v1"
    assert page.locator("#history-table tbody tr").count() == 3
    browser.screenshot("models-staff")

    page.click("header button:has-text('Log out')")
    page.wait_for_url(browser.base + "/")
    assert "Log in" in page.inner_text("header")
    browser.screenshot("home-anonymous")

    phone = session(phone=True)
    phone.open("/ui/models/")
    phone.assert_fits_width()
    phone.screenshot("models-phone")
    browser.assert_no_js_errors()
    phone.assert_no_js_errors()
