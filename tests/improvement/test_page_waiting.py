"""The cycle page while it waits for a person. Its note on the images that wait: counted now, its links to the
review queue counted now, shown while the cycle is at its review or wait stage (when the API gives
``waiting_images``), and never shown from the browser's cache (a person comes back to the page from the review
queue). What was asked for, in words."""
from __future__ import annotations

import pytest
from django.urls import reverse

from apps.characters.models import Image
from apps.characters.services import image_approve
from apps.crawling.models import CrawlJob, SeenPost
from apps.improvement.models import Cycle
from apps.improvement.services import cycle_advance, initial_stages
from tests.evaluation.conftest import store_image


@pytest.fixture
def waiting(cycle_world):
    """A cycle waiting for a person: its crawl job brought three pending pictures of hu-tao."""
    hu_tao = cycle_world["characters"][2]
    job = CrawlJob.objects.create(source="danbooru", character=hu_tao, quota=3, status="succeeded")
    images = []
    for seed in range(700, 703):
        images.append(store_image(label=2, seed=seed, character=hu_tao))
        SeenPost.objects.create(source="danbooru", post_id=str(seed), outcome="new", image=images[-1], job=job)
    Image.objects.filter(pk__in=[image.pk for image in images]).update(status="pending", source_kind="crawl")
    done = ("plan", "crawl", "review")
    cycle = Cycle.objects.create(
        from_evaluation=cycle_world["evaluation"], stage="wait", epochs=1,
        stages=[{**record, "status": "succeeded"} if record["name"] in done else record for record in initial_stages()],
        plan={"tiers": [{"tier": 1, "name": "P1", "status": "done", "jobs": [job.pk], "targets": {"hu-tao": 3}}]})
    cycle.crawl_jobs.add(job)
    cycle = cycle_advance(cycle_id=cycle.pk)
    assert cycle.stage_record("wait")["detail"] == "3 crawled image(s) wait for review"
    return {"cycle": cycle, "job": job, "images": images}


def _page(client, user, cycle: Cycle):
    client.force_login(user)
    return client.get(reverse("improvement:detail", args=[cycle.pk]))


def test_the_note_and_its_links_count_what_waits_now(waiting, client, staff_user, staff_api_client):
    cycle, job = waiting["cycle"], waiting["job"]
    image_approve(image_ids=[waiting["images"][0].pk])  # a person reviewed one; no advance since
    response = _page(client, staff_user, cycle)
    page = response.content.decode()
    assert '<span data-field="waiting_images">2</span> image(s)</strong> from this cycle' in page
    # The note's link says 2 as well (it said the wait stage's 3, counted at its last advance, beside a 2).
    assert f'<a href="/ui/review/?crawl_job={job.pk}">review what crawl #{job.pk} brought (2 pending)</a>' in page
    assert "3 crawled image(s) wait for review" in page  # the stage's row: what its last step said
    assert "no-store" in response["Cache-Control"]
    assert staff_api_client.get(f"/api/v1/cycles/{cycle.pk}/").json()["waiting_images"] == 2


def test_no_note_once_the_cycle_is_past_its_wait(waiting, client, staff_user, staff_api_client):
    cycle = waiting["cycle"]
    Cycle.objects.filter(pk=cycle.pk).update(stage="train")  # went on without them: they stay out of the version
    page = _page(client, staff_user, cycle).content.decode()
    # The page said "3 image(s) wait", and its poll then wrote "—" there (the API's null past the wait).
    assert 'id="cycle-waiting"' not in page
    assert staff_api_client.get(f"/api/v1/cycles/{cycle.pk}/").json()["waiting_images"] is None


def test_what_was_asked_for_reads_one_epoch(waiting, client, staff_user):
    page = " ".join(_page(client, staff_user, waiting["cycle"]).content.decode().split())
    assert "<dt>Training</dt><dd>1 epoch, default's image size</dd>" in page  # not "1 epochs"
