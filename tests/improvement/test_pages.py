"""The cycle pages: start a cycle from an evaluation, see each stage and what waits for a person, and steer it."""
from __future__ import annotations

import pytest
from django.urls import reverse

from apps.characters.models import Image
from apps.crawling.models import CrawlJob, SeenPost
from apps.improvement.models import Cycle
from apps.improvement.services import cycle_advance, cycle_create, initial_stages
from tests.evaluation.conftest import store_image


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_staff_start_a_cycle_from_the_form_and_land_on_its_page(cycle_world, staff_client):
    run = cycle_world["evaluation"]
    page = staff_client.get(reverse("improvement:list") + f"?evaluation={run.pk}")
    assert page.status_code == 200
    assert f'<option value="{run.pk}" selected>' in page.content.decode()  # the evaluation asked for, chosen
    response = staff_client.post(reverse("improvement:start"), {
        "from_evaluation": run.pk, "characters": "hu-tao, char-0", "sources": ["danbooru"], "epochs": "2",
        "auto_approve_min_confidence": "0.95", "promote_if_better": "on"})
    cycle = Cycle.objects.get()
    assert response.status_code == 302 and response.url == reverse("improvement:detail", args=[cycle.pk])
    assert (cycle.origin, cycle.characters, cycle.sources, cycle.epochs, cycle.auto_approve_min_confidence) == (
        "page", ["hu-tao", "char-0"], ["danbooru"], 2, 0.95)
    assert cycle.promote_if_better and not cycle.skip_waiting

    detail = staff_client.get(response.url).content.decode()
    assert detail.count('<tr data-stage="') == 9 and 'id="cycle-cancel"' in detail
    assert 'id="cycle-continue"' in detail and "Plan the collection" in detail


def test_a_refusal_is_shown_next_to_the_field_and_nothing_starts(cycle_world, staff_client):
    response = staff_client.post(reverse("improvement:start"), {
        "from_evaluation": cycle_world["evaluation"].pk, "characters": "ghost"})
    assert response.status_code == 400 and not Cycle.objects.exists()
    form = response.context["form"]
    assert form.errors["characters"] == ["No character with the slug ghost."]


def test_cancel_then_resume_from_the_page(cycle_world, staff_client):
    cycle = cycle_create(from_evaluation=cycle_world["evaluation"], queue=False)
    response = staff_client.post(reverse("improvement:cancel", args=[cycle.pk]), follow=True)
    cancelled = Cycle.objects.get(pk=cycle.pk)
    assert cancelled.status == "cancelled" and cancelled.stage_record("plan")["status"] == "cancelled"
    page = response.content.decode()
    assert "cancelled, with the crawls, training and evaluations it was running" in page
    assert 'id="cycle-resume"' in page and "Resume at: plan the collection" in page
    staff_client.post(reverse("improvement:resume", args=[cycle.pk]))
    assert Cycle.objects.get(pk=cycle.pk).status == "queued"
    refused = staff_client.post(reverse("improvement:resume", args=[cycle.pk]), follow=True)
    assert "only failed or cancelled jobs" in refused.content.decode()  # a queued cycle: the service's 409


def test_the_page_says_how_many_images_wait_and_links_to_their_review(cycle_world, staff_client):
    hu_tao = cycle_world["characters"][2]
    job = CrawlJob.objects.create(source="danbooru", character=hu_tao, quota=5, status="succeeded")
    for seed in (900, 901, 902):
        image = store_image(label=2, seed=seed, character=hu_tao)
        Image.objects.filter(pk=image.pk).update(status="pending", source_kind="crawl")
        SeenPost.objects.create(source="danbooru", post_id=str(seed), outcome="new", image=image, job=job)
    stages = [{**record, "status": "succeeded"} if record["name"] in ("plan", "crawl", "review") else record
              for record in initial_stages()]
    cycle = Cycle.objects.create(from_evaluation=cycle_world["evaluation"], stage="wait", stages=stages,
                                 plan={"tiers": [{"tier": 1, "name": "P1", "status": "done", "jobs": [job.pk],
                                                  "targets": {"hu-tao": 5}}]})
    cycle.crawl_jobs.add(job)
    cycle = cycle_advance(cycle_id=cycle.pk)  # the wait stage counts them and waits
    assert cycle.stage_record("wait")["status"] == "waiting"

    page = staff_client.get(reverse("improvement:detail", args=[cycle.pk])).content.decode()
    assert '<span data-field="waiting_images">3</span> image(s)</strong> from this cycle' in page
    assert f'href="/ui/review/?crawl_job={job.pk}">review what crawl #{job.pk} brought (3 pending)</a>' in page
    assert "3 crawled image(s) wait for review" in page


def test_anyone_reads_the_pages_only_staff_act(cycle_world, client):
    cycle = cycle_create(from_evaluation=cycle_world["evaluation"], queue=False)
    listing = client.get(reverse("improvement:list")).content.decode()
    assert 'id="cycle-start-form"' not in listing and f'href="/ui/cycles/{cycle.pk}/"' in listing
    detail = client.get(reverse("improvement:detail", args=[cycle.pk])).content.decode()
    assert 'id="cycle-cancel"' not in detail
    response = client.post(reverse("improvement:cancel", args=[cycle.pk]))
    assert response.status_code == 302 and "/login/" in response.url
    assert Cycle.objects.get(pk=cycle.pk).status == "queued"
