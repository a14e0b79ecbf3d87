"""/api/v1/crawl-jobs/ (watch for all, start/cancel/retry/plan for staff) and /api/v1/crawl-sources/."""
from __future__ import annotations

import pytest

from apps.crawling.models import CrawlJob
from apps.crawling.services import crawl_job_create

pytestmark = pytest.mark.django_db


def test_staff_start_a_job_and_anyone_can_watch_it(staff_api_client, api_client, crawl_settings, character,
                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "character": "hu-tao",
                                                                  "quota": 7}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["source"], body["character"], body["query"], body["quota"], body["status"]) == (
        "danbooru", "hu-tao", "hu_tao", 7, "queued")
    assert body["requested_by"] == "curator" and len(callbacks) == 1
    listed = api_client.get("/api/v1/crawl-jobs/?status=queued&character=hu-tao").json()
    assert listed["count"] == 1 and listed["results"][0]["accepted"] == 0
    detail = api_client.get(f"/api/v1/crawl-jobs/{body['id']}/").json()
    assert {"listed", "skipped_known", "downloaded", "accepted", "exact_duplicates", "near_duplicates",
            "too_small", "refused", "errors_by_kind", "progress"} <= set(detail)


def test_writes_need_staff(api_client, crawl_settings, character):
    assert api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "quota": 1, "query": "x"},
                           format="json").status_code in (401, 403)
    job = crawl_job_create(source="danbooru", character=character, quota=1, queue=False)
    assert api_client.post(f"/api/v1/crawl-jobs/{job.pk}/cancel/").status_code in (401, 403)
    assert api_client.post(f"/api/v1/crawl-jobs/{job.pk}/retry/").status_code in (401, 403)


def test_errors_are_json_with_a_code(staff_api_client, crawl_settings, character):
    response = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "pixiv", "quota": 1, "query": "x"},
                                     format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_source"
    assert "danbooru" in response.json()["error"]["message"]
    response = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "waifu_pics", "character": "hu-tao",
                                                              "quota": 1}, format="json")
    assert response.json()["error"]["code"] == "unlabelled_source"


def test_cancel_and_retry_actions(staff_api_client, crawl_settings, character, django_capture_on_commit_callbacks):
    job = crawl_job_create(source="danbooru", character=character, quota=1, queue=False)
    response = staff_api_client.post(f"/api/v1/crawl-jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = staff_api_client.post(f"/api/v1/crawl-jobs/{job.pk}/cancel/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_active"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retried = staff_api_client.post(f"/api/v1/crawl-jobs/{job.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "queued" and len(callbacks) == 1
    assert CrawlJob.objects.get(pk=job.pk).cancel_requested is False


def test_plan_action(staff_api_client, crawl_settings, character):
    response = staff_api_client.post("/api/v1/crawl-jobs/plan/", {"targets": [{"character": "hu-tao", "wanted": 9}]},
                                     format="json")
    assert response.status_code == 201
    assert sorted((j["source"], j["quota"]) for j in response.json()) == [("safebooru", 5), ("safebooru_donmai", 4)]


def test_sources_list(api_client, crawl_settings):
    rows = {row["name"]: row for row in api_client.get("/api/v1/crawl-sources/").json()}
    assert {"danbooru", "safebooru_donmai", "gelbooru", "safebooru", "waifu_pics", "local_folder",
            "url_list"} <= set(rows)
    assert rows["waifu_pics"]["labelled"] is False and rows["safebooru"]["tag_family"] == "gelbooru"
    assert rows["danbooru"]["politeness"]["concurrency"] >= 1 and rows["danbooru"]["origin"] == "built-in"
