"""The improvement loop's story in real headless Chromium, with real qcluster workers on both queues: after the
first loop (import, freeze, train, evaluate, promote: ``FirstLoop``), the staff user starts a cycle from
default's evaluation against the fake booru on 127.0.0.1 for one character, with auto-approval at 0.9; the
cycle crawls, and its page says how many images wait; the user opens the review queue from there, decides
with the keyboard only (approve, reject with a reason, take a suggestion, undo), presses continue, and the
cycle freezes, trains (1 epoch, 32 px), evaluates, compares and shows the new model promoted or held with the
reason. Screenshots: var/test/screenshots/cycle-e2e-*.png."""
from __future__ import annotations

import pytest

from tests.conftest import running_qcluster, wait_for
from tests.crawling.conftest import TAG, crawl_worker_env, standard_posts

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AUTO_APPROVE = 0.9
POSTS = 8  # pictures of hu_tao on the fake booru
# Every character gets a small target (a tier for the rest, as a curator may add): whatever default's accuracy
# on hu tao, the plan has it. The seeded rules come back too (a transactional test's flush removed them).
CATCH_ALL_RULE = {"priority": 4, "name": "P4: the rest", "max_accuracy": 1.0, "inclusive": True, "images": 5}


def tier_rules() -> None:
    from apps.evaluation.models import DEFAULT_TIER_RULES, TierRule

    for rule in (*DEFAULT_TIER_RULES, CATCH_ALL_RULE):
        TierRule.objects.get_or_create(priority=rule["priority"], defaults=rule)


def current(page) -> int:
    """The review card the keys act on (it has the focus)."""
    image = page.get_attribute(".review-card.current", "data-image")
    assert page.evaluate("document.activeElement.dataset.image") == image
    return int(image)


def state(image_id: int) -> tuple[str, str, str | None]:
    from apps.characters.models import Image

    image = Image.objects.select_related("character").get(pk=image_id)
    return image.status, image.reason, image.character.slug if image.character_id else None


def stage_status(page, name: str):
    return page.locator(f"#stages tr[data-stage='{name}'] [data-stage-status]")


def test_a_cycle_from_the_browser_with_a_keyboard_review(first_loop, world, crawl_settings):
    from apps.characters.models import Character, DatasetItem, Image
    from apps.improvement.models import Cycle
    from apps.improvement.stages import crawled_images
    from apps.inference.models import ModelAlias
    from apps.review.models import Suggestion

    tier_rules()
    world.posts = standard_posts(["ok"] * POSTS)
    env = {**first_loop.worker_env, **crawl_worker_env(world, crawl_settings), "KYARA_CRAWL_READ_TIMEOUT": "5"}
    with running_qcluster("qcluster-cycle-e2e.log", **env):
        loop = first_loop.run(shots="cycle-e2e-loop")
        browser, default = loop.browser, loop.job.model_version
        hu_tao = Character.objects.get(name="Hu Tao")
        hu_tao.booru_tags = {"danbooru": TAG}  # its tag on the booru, as a curator sets it in the admin
        hu_tao.save()

        # 1. Start a cycle from default's evaluation on v1/test, for Hu Tao only, from danbooru (the fake one).
        page = browser.open(f"/ui/cycles/?evaluation={loop.test_run.pk}")
        assert page.locator("#id_from_evaluation").input_value() == str(loop.test_run.pk)
        page.fill("#id_characters", hu_tao.slug)
        page.select_option("#id_sources", ["danbooru"])
        page.fill("#id_auto_approve_min_confidence", str(AUTO_APPROVE))
        page.fill("#id_epochs", "1")
        page.fill("#id_image_size", "32")
        page.check("#id_promote_if_better")
        browser.screenshot("cycle-e2e-1-start")
        page.click("#cycle-submit")
        page.wait_for_url("**/ui/cycles/*/")
        cycle = Cycle.objects.get()
        assert (cycle.characters, cycle.sources, cycle.auto_approve_min_confidence) == ([hu_tao.slug], ["danbooru"],
                                                                                         AUTO_APPROVE)

        # 2. It plans, crawls, auto-reviews, and waits for a person; the page follows and says how many wait.
        page.locator("#stages tr[data-stage='wait'] .status-waiting").wait_for(timeout=240_000)
        page.wait_for_selector("#cycle[data-stage='wait']")
        cycle.refresh_from_db()
        assert cycle.status == "running" and cycle.stage == "wait", cycle.error
        crawled = list(crawled_images(cycle).order_by("pk"))
        assert crawled and all(image.character_id == hu_tao.pk for image in crawled)
        # The policy: approved exactly where default gave Hu Tao at least 0.9.
        verdicts = {s.image_id: s for s in Suggestion.objects.filter(model_version=default, image__in=crawled)}
        assert set(verdicts) == {image.pk for image in crawled}
        approved = [i.pk for i in crawled if verdicts[i.pk].claimed_probability >= AUTO_APPROVE]
        waiting = [i.pk for i in crawled if i.pk not in approved]
        assert {i.pk: i.status for i in crawled} == {pk: "approved" if pk in approved else "pending"
                                                      for pk in verdicts}
        assert len(waiting) >= 3, "too few images left for the person to review"
        assert cycle.stage_record("review")["detail"].startswith(
            f"{len(crawled)} image(s) given {default.name}'s suggestions, {len(approved)} approved by the policy")
        banner = page.locator("#cycle-waiting")
        assert banner.locator("[data-field='waiting_images']").inner_text() == str(len(waiting))
        assert stage_status(page, "crawl").inner_text() == "succeeded"
        assert page.locator("tr[data-stage='wait'] [data-stage-detail]").inner_text() == \
            f"{len(waiting)} crawled image(s) wait for review"
        browser.screenshot("cycle-e2e-2-waiting")

        # 3. The review queue from the cycle's link, narrowed to its crawl job; keys only from here.
        (job_id,) = cycle.crawl_jobs.values_list("pk", flat=True)
        banner.locator(f"a[href='/ui/review/?crawl_job={job_id}']").click()
        page.wait_for_url(f"**/ui/review/?crawl_job={job_id}")
        cards = page.locator("#review-grid .review-card")
        cards.first.wait_for()
        assert sorted(map(int, cards.evaluate_all("nodes => nodes.map(n => n.dataset.image)"))) == sorted(waiting)
        page.wait_for_function("() => [...document.querySelectorAll('.review-card img')].every(i => i.complete "
                               "&& i.naturalWidth)")
        browser.screenshot("cycle-e2e-3-review")
        kept = current(page)
        page.keyboard.press("a")  # approve with its label
        thrown = current(page)
        page.keyboard.press("r")  # reject, then a reason by its key
        page.locator("#reject-dialog").wait_for()
        reason = page.get_attribute("#reject-dialog [data-key='1']", "data-reason")
        page.keyboard.press("1")
        relabelled = current(page)
        suggestion = page.get_attribute(".review-card.current .suggestion .name", "title")  # suggestion 1's slug
        page.keyboard.press("1")  # take it
        page.wait_for_function("() => document.getElementById('review-sync').textContent === 'all decisions saved'")
        assert state(kept) == ("approved", "", hu_tao.slug)
        assert state(thrown) == ("rejected", reason, hu_tao.slug)
        assert state(relabelled) == ("approved", "", suggestion)
        assert page.locator("#review-count").inner_text() == str(len(waiting) - 3)
        browser.screenshot("cycle-e2e-4-reviewed")
        page.keyboard.press("u")  # the last decision goes back; its card returns with the focus
        page.locator(f".review-card[data-image='{relabelled}']").wait_for()
        wait_for(lambda: state(relabelled) == ("pending", "", hu_tao.slug), timeout=15, message="the undo")
        page.wait_for_function("() => document.getElementById('review-sync').textContent === 'all decisions saved'")
        assert current(page) == relabelled
        assert state(kept) == ("approved", "", hu_tao.slug) and state(thrown) == ("rejected", reason, hu_tao.slug)
        assert page.locator("#review-count").inner_text() == str(len(waiting) - 2)
        browser.screenshot("cycle-e2e-5-undone")

        # 4. Back on the cycle's page: two fewer wait, and its link to the queue says so. Continue without them.
        page.go_back()
        page.wait_for_url(f"**/ui/cycles/{cycle.pk}/")
        left = len(waiting) - 2
        assert banner.locator("[data-field='waiting_images']").inner_text() == str(left)
        assert banner.locator("a").all_inner_texts() == [f"review what crawl #{job_id} brought ({left} pending)"]
        assert page.locator("#cycle dd", has_text="epoch").inner_text() == "1 epoch, 32 px"
        page.click("#cycle-continue")
        assert "goes on without waiting" in page.locator(".msg.success").inner_text()
        browser.screenshot("cycle-e2e-6-continued")

        # 5. Freeze, train, evaluate, compare, promote: the page follows (reloaded at each stage) until the cycle
        # ends with its outcome. Past the wait, nothing is said to wait for it.
        page.wait_for_selector("#cycle:not([data-stage='wait']):not([data-stage='freeze'])", timeout=60_000)
        assert banner.count() == 0
        browser.screenshot("cycle-e2e-7-running")
        page.locator("#cycle[data-active='0'] #cycle-outcome").wait_for(timeout=480_000)
        cycle.refresh_from_db()
        assert cycle.status == "succeeded", cycle.error
        assert [record["status"] for record in cycle.stages] == ["succeeded"] * 9
        assert stage_status(page, "promote").all_inner_texts() == ["succeeded"]
        assert cycle.stage_record("wait")["detail"].startswith(f"went on without waiting: {left} crawled image(s)")
        new = cycle.training_job.model_version
        assert cycle.training_job.config["epochs"] == 1 and cycle.training_job.config["image_size"] == 32
        frozen = set(DatasetItem.objects.filter(version=cycle.dataset_version).values_list("image_id", flat=True))
        assert kept in frozen and {thrown, relabelled, *approved} - frozen == {thrown, relabelled}
        assert Image.objects.filter(pk__in=frozen, status="pending").count() == 0
        outcome = page.locator("#cycle-outcome")
        if cycle.promoted:
            assert outcome.locator("h2").inner_text() == f"Promoted: default → {new.name}"
            assert ModelAlias.objects.get(name="default").version == new and cycle.hold_reason == ""
            assert page.locator("#hold-reason").count() == 0
        else:
            assert outcome.locator("h2").inner_text() == "Held as candidate" and cycle.hold_reason
            assert page.locator("#hold-reason").inner_text() == cycle.hold_reason
            assert ModelAlias.objects.get(name="default").version == default
            assert ModelAlias.objects.get(name="candidate").version == new
        assert page.locator("#comparison tbody tr").count() == len(cycle.comparison["splits"]) == 2
        assert banner.count() == 0
        browser.screenshot("cycle-e2e-8-outcome")

        # 6. The list of cycles says the same.
        page = browser.open("/ui/cycles/")
        badge = page.locator(f"tr[data-cycle='{cycle.pk}'] .badge")
        assert badge.inner_text() == ("promoted" if cycle.promoted else "held")
        if not cycle.promoted:
            assert badge.get_attribute("title") == cycle.hold_reason
        browser.screenshot("cycle-e2e-9-list")
        browser.assert_no_js_errors()
