"""The review page in real headless Chromium against the live server: a staff user reviews with the keyboard
only, and the database shows exactly what was decided. Screenshots go to var/test/screenshots/review-*.png.

The images and the trained colour model are tests/review/conftest.py's (``suggested``); the browser and
its sessions are the dashboard's fixtures, which that conftest brings in."""
from __future__ import annotations

import pytest

from tests.conftest import near_copy_bytes, wait_for
from tests.inference.conftest import class_image_bytes

from .conftest import BLUE, GREEN, RED, ingest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def state(image) -> tuple[str, str, str | None]:
    image.refresh_from_db()
    return image.status, image.reason, image.character.slug if image.character_id else None


def current(page) -> int:
    """The id of the card the keys act on (outlined), which has the focus."""
    ids = page.eval_on_selector_all(".review-card.current", "nodes => nodes.map(n => Number(n.dataset.image))")
    assert len(ids) == 1, ids
    assert page.evaluate("document.activeElement.dataset.image") == str(ids[0])
    return ids[0]


def focus_on(page, image_id: int) -> None:
    """Walk with j/k to the card of ``image_id`` (keys only)."""
    cards = page.eval_on_selector_all(".review-card", "nodes => nodes.map(n => Number(n.dataset.image))")
    step = cards.index(image_id) - cards.index(current(page))
    for _ in range(abs(step)):
        page.keyboard.press("j" if step > 0 else "k")
    assert current(page) == image_id


def saved(page) -> None:
    page.wait_for_function("() => document.getElementById('review-sync').textContent === 'all decisions saved'")


def test_a_reviewer_decides_with_the_keyboard_only(session, staff_user, suggested, characters):
    w = suggested
    before = {image.pk: state(image) for image in w.all}
    ingest(near_copy_bytes(class_image_bytes(RED, 50)), character=characters[RED], status="approved",
           source_kind="import")  # the dataset already holds a near-copy of the contradicted picture
    browser = session(user=staff_user)
    page = browser.open("/ui/review/")
    grid = page.locator("#review-grid .review-card")
    grid.first.wait_for()
    assert grid.count() == len(w.all) and page.locator("#review-count").inner_text() == str(len(w.all))
    assert page.locator("#nav-review-count").inner_text() == str(len(w.all))
    # Largest doubt first: the flagged picture (a red one labelled green), its suggestions and its near-copy.
    first = grid.first
    assert current(page) == w.contradicted.pk and "flagged" in first.get_attribute("class")
    assert first.locator(".suggestion").count() == 3
    assert first.locator(".suggestion .name").first.inner_text() == "Red Hero"
    assert first.locator(".review-dups img").count() == 1
    page.wait_for_function("() => [...document.querySelectorAll('.review-card img')].every(i => i.complete && i.naturalWidth)")
    browser.screenshot("review-desktop")

    page.keyboard.press("?")
    page.locator("#help-dialog").wait_for()
    browser.screenshot("review-help")
    page.keyboard.press("Escape")
    assert current(page) == w.contradicted.pk

    # 1: the model's first suggestion (Red Hero) for the flagged picture; the next card takes the focus.
    page.keyboard.press("1")
    assert page.locator(f".review-card[data-image='{w.contradicted.pk}']").count() == 0
    assert current(page) == w.disputed.pk
    # r, then 1: rejected as showing another character.
    page.keyboard.press("r")
    page.locator("#reject-dialog").wait_for()
    browser.screenshot("review-reject-reasons")
    page.keyboard.press("1")
    # a: the next one (green, the model agrees) approved with its label.
    assert current(page) == w.unsure.pk
    page.keyboard.press("a")
    # /: the unlabelled picture labelled by name through the type-ahead.
    focus_on(page, w.unlabelled.pk)
    page.keyboard.press("/")
    page.locator("#label-search").wait_for()
    page.keyboard.type("blue kn")
    page.locator("#label-options [role=option]").first.wait_for()
    assert page.locator("#label-options [role=option][aria-selected=true] .name").inner_text() == "Blue Knight"
    browser.screenshot("review-typeahead")
    page.keyboard.press("Enter")
    saved(page)
    assert state(w.contradicted) == ("approved", "", RED)
    assert state(w.disputed) == ("rejected", "wrong_character", RED)
    assert state(w.unsure) == ("approved", "", GREEN)
    assert state(w.unlabelled) == ("approved", "", BLUE)

    # u: the last decision (the type-ahead's) is undone on the server; its card comes back with the focus.
    page.keyboard.press("u")
    page.locator(f".review-card[data-image='{w.unlabelled.pk}']").wait_for()
    wait_for(lambda: state(w.unlabelled) == before[w.unlabelled.pk], timeout=15, message="the undo")
    assert current(page) == w.unlabelled.pk
    saved(page)  # the rest of the undone batch was decided again
    assert state(w.unsure) == ("approved", "", GREEN) and state(w.contradicted) == ("approved", "", RED)
    assert "is back" in page.locator("#review-status").inner_text()

    # A decision the server refuses: the label went away behind the page's back, so "a" cannot approve.
    from apps.characters.models import Image

    Image.objects.filter(pk=w.confirmed[2].pk).update(character=None)
    focus_on(page, w.confirmed[2].pk)
    page.keyboard.press("a")
    refused = page.locator(f".review-card[data-image='{w.confirmed[2].pk}'] .review-error")
    refused.wait_for()
    assert "has no character" in refused.inner_text() and "Refused" in refused.inner_text()
    assert page.locator("#review-status.error").is_visible()
    browser.screenshot("review-refused")

    decided = {w.contradicted.pk, w.disputed.pk, w.unsure.pk}
    for image in w.all:
        if image.pk not in decided and image.pk != w.confirmed[2].pk:
            assert state(image) == before[image.pk], image
    assert state(w.confirmed[2]) == ("pending", "", None)
    assert grid.count() == len(w.all) - len(decided)
    assert page.locator("#review-count").inner_text() == str(len(w.all) - len(decided))
    # The one error in the console is Chromium noting the refused request; no script failed.
    assert browser.errors == ["console: Failed to load resource: the server responded with a status of 400 (Bad Request)"]


def test_bulk_approval_on_a_phone_and_filters(session, staff_user, suggested):
    """At phone width: the page fits, the cards' buttons work by touch, a character filter found by the
    type-ahead narrows the queue, and the bulk control approves what the model agrees with at ≥ p (undone
    with u as one batch)."""
    w = suggested
    phone = session(user=staff_user, phone=True)
    page = phone.open("/ui/review/")
    page.locator(".review-card").first.wait_for()
    phone.assert_fits_width()
    phone.screenshot("review-phone")

    page.fill("#filter-character", "green")
    page.locator("#filter-character-options [role=option]").first.click()
    page.wait_for_url(f"**/ui/review/?character={GREEN}")
    ids = page.eval_on_selector_all(".review-card", "nodes => nodes.map(n => Number(n.dataset.image))")
    assert ids == [w.contradicted.pk, w.unsure.pk, w.confirmed[1].pk]

    page.fill("#bulk-p", "0.9")
    marked = page.eval_on_selector_all(".review-card.would-approve", "nodes => nodes.map(n => Number(n.dataset.image))")
    assert marked == [w.confirmed[1].pk]  # the unsure one (about 73%) stays for a person
    page.click("#bulk-open")
    page.locator("#bulk-dialog").wait_for()
    assert "90%" in page.locator("#bulk-question").inner_text()
    phone.screenshot("review-bulk-confirm")
    page.click("#bulk-confirm")
    page.locator("#review-status >> text=Approved 1 image").wait_for()
    assert state(w.confirmed[1]) == ("approved", "", GREEN)
    assert state(w.unsure)[0] == "pending" and state(w.confirmed[0])[0] == "pending"  # another character: untouched
    wait_for(lambda: page.locator(".review-card").count() == 2, timeout=10, message="the approved card to leave")
    page.keyboard.press("u")  # the bulk approval is undone as one batch, and the grid read again
    wait_for(lambda: state(w.confirmed[1])[0] == "pending", timeout=15, message="the bulk approval's undo")
    wait_for(lambda: page.locator(".review-card").count() == 3, timeout=10, message="the card to come back")
    assert "Undone: 1 image(s) of approve agreeing batch" in page.locator("#review-status").inner_text()

    page.locator(f".review-card[data-image='{w.unsure.pk}'] button[data-act=reject]").tap()
    page.locator("#reject-dialog [data-reason=low_quality]").tap()
    page.wait_for_function("() => document.getElementById('review-sync').textContent === 'all decisions saved'")
    assert state(w.unsure) == ("rejected", "low_quality", GREEN)
    phone.assert_fits_width()
    phone.assert_no_js_errors()
