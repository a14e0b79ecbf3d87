"""Crawl jobs in the admin and the crawl action added to the characters' admin."""
from __future__ import annotations

import pytest
from django.contrib import admin

from apps.characters.models import Character
from apps.crawling.admin import attach_character_actions, crawl_for_characters
from apps.crawling.models import CrawlJob
from apps.crawling.services import crawl_job_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.invalid", "pw")
    client.force_login(user)
    return client


def test_crawl_job_admin_pages(staff_client, crawl_settings, character):
    job = crawl_job_create(source="danbooru", character=character, quota=3, queue=False)
    page = staff_client.get("/admin/crawling/crawljob/")
    assert page.status_code == 200 and b"<progress" in page.content
    assert b'http-equiv="refresh"' in page.content  # a queued job: the list refreshes itself
    assert staff_client.get(f"/admin/crawling/crawljob/{job.pk}/change/").status_code == 200
    assert staff_client.get("/admin/crawling/crawljob/add/").status_code == 200
    response = staff_client.post("/admin/crawling/crawljob/", {"action": "cancel_jobs", "_selected_action": [job.pk]})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_admin_add_form_goes_through_the_service(staff_client, crawl_settings, character,
                                                 django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post("/admin/crawling/crawljob/add/", {"source": "safebooru", "character": character.pk,
                                                                       "query": "", "quota": 4})
    assert response.status_code == 302, response.content[:2000]
    job = CrawlJob.objects.get()
    assert (job.origin, job.query, job.quota) == ("admin", "hu_tao", 4) and len(callbacks) == 1
    bad = staff_client.post("/admin/crawling/crawljob/add/", {"source": "waifu_pics", "character": character.pk,
                                                              "quota": 4})
    assert bad.status_code == 200 and b"no character label" in bad.content


def test_character_admin_gets_the_crawl_action(rf, crawl_settings, character, django_user_model):
    site = admin.AdminSite(name="test")
    assert attach_character_actions(site) is False  # nothing registered: nothing to do
    site.register(Character)
    assert attach_character_actions(site) is True
    model_admin = site.get_model_admin(Character)
    assert crawl_for_characters in model_admin.actions
    attach_character_actions(site)
    assert list(model_admin.actions).count(crawl_for_characters) == 1

    request = rf.post("/")
    request.user = django_user_model.objects.create_superuser("boss", "b@example.invalid", "pw")
    request.session = {}
    from django.contrib.messages.storage.fallback import FallbackStorage

    request._messages = FallbackStorage(request)
    character.target_image_count = 30
    character.save()
    crawl_for_characters(model_admin, request, Character.objects.all())
    assert sorted((j.source, j.quota) for j in CrawlJob.objects.all()) == [("safebooru", 15),
                                                                           ("safebooru_donmai", 15)]


def test_the_project_admin_has_the_action_when_characters_register_one(crawl_settings):
    if not admin.site.is_registered(Character):
        pytest.skip("the characters app registers no Character admin yet")
    assert crawl_for_characters in admin.site.get_model_admin(Character).actions
