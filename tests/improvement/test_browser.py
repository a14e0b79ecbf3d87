"""The cycle pages in real headless Chromium against the live server: a held cycle's stages and comparison, the
start form refusing with the reason next to the field, then starting a cycle and cancelling it from its page.
Screenshots go to var/test/screenshots/cycle-*.png."""
from __future__ import annotations

import pytest

from apps.improvement.models import Cycle
from tests.crawling.conftest import TAG
from tests.dashboard.conftest import session  # noqa: F401 - a page session in Chromium, reused

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_held_cycle_then_start_and_cancel_one_from_the_pages(transactional_db, at_evaluate, session,  # noqa: F811
                                                              staff_user, settings):
    held = at_evaluate["start"](promote_if_better=True, margin=0.34)
    settings.KYARA_RUN_TASKS_INLINE = False  # the cycle started below stays queued: no worker here
    chromium = session(user=staff_user)
    page = chromium.open(f"/ui/cycles/{held.pk}/")
    assert page.locator("#hold-reason").inner_text().startswith("not better by the margin: on v1/test")
    rows = page.locator("#comparison tbody tr")
    assert rows.count() == 2 and "66.7%" in rows.first.inner_text() and "33.3%" in rows.first.inner_text()
    statuses = page.locator("#stages [data-stage-status]").all_inner_texts()
    assert statuses == ["succeeded"] * 9
    assert "held: candidate → new-model" in page.locator("tr[data-stage='promote']").inner_text()
    chromium.screenshot("cycle-held")

    page = chromium.open(f"/ui/cycles/?evaluation={at_evaluate['run'].pk}")
    page.fill("#id_characters", "char-0")
    page.click("#cycle-submit")
    error = page.locator("#id_characters ~ .errorlist")
    assert "The cycle would collect nothing: no source has tags for char-0" in error.inner_text()
    chromium.screenshot("cycle-start-refused")
    chromium.errors.clear()  # the refusal is a 400 the browser logs

    char_0 = held.from_evaluation.characters.get(label="char-0").character
    char_0.booru_tags = {"danbooru": TAG}
    char_0.save()
    page.fill("#id_characters", "char-0")
    page.select_option("#id_sources", ["danbooru"])
    page.check("#id_promote_if_better")
    page.click("#cycle-submit")
    page.wait_for_url("**/ui/cycles/*/")
    started = Cycle.objects.exclude(pk=held.pk).get()
    assert started.characters == ["char-0"] and started.sources == ["danbooru"] and started.status == "queued"
    assert page.locator("#stages [data-stage-status]").all_inner_texts() == ["pending"] * 9
    page.click("#cycle-cancel")
    page.locator("#cycle-resume").wait_for()
    assert Cycle.objects.get(pk=started.pk).status == "cancelled"
    assert "cancelled, with the crawls, training and evaluations" in page.locator(".messages").inner_text()
    chromium.screenshot("cycle-cancelled")
    chromium.assert_no_js_errors()
