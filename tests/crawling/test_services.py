"""Crawl job services: validation, incremental reruns, cursors, safety, cancel, retry, collection plans."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.characters.models import Character, Image, Series
from apps.core.api import ServiceError
from apps.crawling.models import CrawlCursor, CrawlJob
from apps.crawling.pipeline import Phase, merge_cursor
from apps.crawling.services import (
    collection_plan_create,
    crawl_job_cancel,
    crawl_job_create,
    crawl_job_retry,
    crawl_job_run,
    split_quota,
)
from tests.crawling.conftest import standard_posts

pytestmark = pytest.mark.django_db


def run(source="danbooru", character=None, query="", quota=100, **options):
    job = crawl_job_create(source=source, character=character, query=query, quota=quota, queue=False, **options)
    return crawl_job_run(job_id=job.pk)


def clean_world(world, count=20, top=120):
    world.posts = standard_posts(["ok"] * count, top=top)
    world.within_page_dup = world.across_page_dup = False


# --- validation -------------------------------------------------------------------------------------

@pytest.mark.backend
def test_create_validates_and_queues_after_commit(crawl_settings, character, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = crawl_job_create(source="danbooru", character=character, quota=5)
    assert job.query == "hu_tao" and job.status == "queued" and len(callbacks) == 1
    for kwargs, code in [
        ({"source": "nope", "quota": 5}, "unknown_source"),
        ({"source": "danbooru", "quota": 0}, "invalid_quota"),
        ({"source": "waifu_pics", "quota": 5, "character": character}, "unlabelled_source"),
        ({"source": "url_list", "quota": 5}, "no_query"),
    ]:
        with pytest.raises(ServiceError) as info:
            crawl_job_create(**kwargs)
        assert info.value.code == code
    untagged = Character.objects.create(series=character.series, slug="nobody", name="Nobody")
    with pytest.raises(ServiceError) as info:
        crawl_job_create(source="danbooru", character=untagged, quota=5)
    assert info.value.code == "no_query" and "booru_tags" in info.value.message


def test_unknown_source_error_lists_the_known_ones(crawl_settings):
    with pytest.raises(ServiceError) as info:
        crawl_job_create(source="pixiv", quota=1, query="x")
    assert "danbooru" in info.value.message and "waifu_pics" in info.value.message


# --- incremental ---------------------------------------------------------------------------------------

def test_a_rerun_fetches_only_new_posts_and_stops_at_the_known_block(world, crawl_settings, character):
    clean_world(world)
    first = run(character=character)
    assert (first.accepted, first.stop_reason) == (20, "exhausted")
    cursor = CrawlCursor.objects.get(source="danbooru")
    assert (cursor.newest_id, cursor.oldest_id, cursor.reached_end) == (120, 101, True)

    world.posts = standard_posts(["ok"] * 3, top=123) + world.posts  # three new posts on the site
    listing_before = world.hits["/posts.json"]
    second = run(character=character)
    assert (second.accepted, second.downloaded, second.stop_reason) == (3, 3, "caught_up")
    assert world.hits["/posts.json"] - listing_before == 2  # stopped after 3 known posts, on page 2
    cursor.refresh_from_db()
    assert (cursor.newest_id, cursor.oldest_id) == (123, 101)


def test_a_job_stopped_by_its_quota_resumes_below_what_it_saw(world, crawl_settings, character):
    clean_world(world)
    first = run(character=character, quota=5)
    assert (first.accepted, first.stop_reason) == (5, "quota")
    cursor = CrawlCursor.objects.get(source="danbooru")
    assert (cursor.newest_id, cursor.oldest_id, cursor.reached_end) == (120, 116, False)

    second = run(character=character, quota=5)
    assert second.accepted == 5 and second.downloaded == 5
    ids = sorted(int(i) for i in Image.objects.values_list("source_post_id", flat=True))
    assert ids == list(range(111, 121))  # the next five, not the first five again


def test_the_cursor_leaves_a_gap_alone():
    cursor = CrawlCursor(source="s", query="q", newest_id=100, oldest_id=50)
    top = Phase(before=None, listed=["200", "199", "198"])
    merge_cursor(cursor, [top], decided={"200", "199", "198"})
    assert (cursor.newest_id, cursor.oldest_id) == (100, 50)  # 197..101 were never seen: no merge
    joined = Phase(before=None, listed=["101", "100", "99"])
    merge_cursor(cursor, [joined], decided={"101", "100", "99"})
    assert (cursor.newest_id, cursor.oldest_id) == (101, 50)
    below = Phase(before=50, listed=["49", "48", "47"], exhausted=True)
    merge_cursor(cursor, [below], decided={"49", "48"})  # 47 failed: the block stops above it
    assert (cursor.oldest_id, cursor.reached_end) == (48, False)


def test_the_same_file_under_another_site_is_skipped_by_md5(world, crawl_settings, character):
    clean_world(world, count=6)
    run("danbooru", character=character)
    gel = run("gelbooru", character=character)  # the same posts (same md5s) through another API
    assert gel.accepted == 0 and gel.downloaded == 0 and gel.skipped_known == 6


# --- safety ---------------------------------------------------------------------------------------

def test_private_addresses_are_refused_when_not_allowed(world, crawl_settings, character, settings):
    settings.KYARA_CRAWL_ALLOW_PRIVATE = False
    job = run(character=character)
    assert job.status == CrawlJob.Status.FAILED
    assert job.error.startswith("private_address") and "127.0.0.1" in job.error
    assert sum(world.hits.values()) == 0  # refused before connecting


@pytest.mark.parametrize("source", ["danbooru", "gelbooru"])
def test_a_rating_ceiling_refuses_stronger_posts_before_download(world, crawl_settings, character, settings, source):
    clean_world(world, count=10)
    strong = [p for p in world.posts if world.questionable(p)]
    assert strong  # the fake site rates some posts "q" / "questionable"
    settings.KYARA_CRAWL_MAX_RATING = "sensitive"
    job = run(source, character=character)
    assert job.refused_by_reason == {"rating": len(strong)}
    assert job.accepted == 10 - len(strong)
    assert all(world.hits[f"/img/{p.id}.png"] == 0 for p in strong)  # never downloaded
    settings.KYARA_CRAWL_MAX_RATING = ""
    assert run(source, character=character).refused_by_reason.get("rating", 0) == 0


def test_rating_codes_of_each_family_map_onto_one_scale():
    from apps.crawling.sources.base import rating_allowed
    from apps.crawling.sources.booru_danbooru import DanbooruSource
    from apps.crawling.sources.booru_gelbooru import GelbooruSource

    assert DanbooruSource.rating_codes["s"] == "sensitive" and GelbooruSource.rating_codes["s"] == "general"
    assert rating_allowed("general", "sensitive") and not rating_allowed("explicit", "questionable")
    assert rating_allowed("", "general")  # unknown ratings pass: the site did not say
    assert rating_allowed("explicit", "")  # no ceiling


def test_approved_option_and_provenance(world, crawl_settings, character):
    clean_world(world, count=2)
    run(character=character, approve=True)
    image = Image.objects.get(source_post_id="120")
    assert image.status == "approved" and image.character == character
    assert image.source_site == "danbooru" and image.source_url == f"{world.root}/img/120.png"
    assert "hu_tao" in image.source_tags


# --- cancel and retry -------------------------------------------------------------------------------

@pytest.mark.backend
def test_cancel_a_queued_job_and_it_never_runs(world, crawl_settings, character):
    job = crawl_job_create(source="danbooru", character=character, quota=3, queue=False)
    crawl_job_cancel(job=job)
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert crawl_job_run(job_id=job.pk).status == "cancelled"
    assert sum(world.hits.values()) == 0
    with pytest.raises(ServiceError) as info:
        crawl_job_cancel(job=job)
    assert info.value.code == "not_active"


def test_retry_continues_towards_the_quota(world, crawl_settings, character, settings,
                                           django_capture_on_commit_callbacks):
    clean_world(world)
    first = run(character=character, quota=8, max_pages=1)  # one page of 5: quota not reached
    assert (first.accepted, first.stop_reason) == (5, "page_cap")
    with pytest.raises(ServiceError):
        crawl_job_retry(job=first)  # succeeded jobs are not retried
    CrawlJob.objects.filter(pk=first.pk).update(status="failed")
    CrawlJob.objects.filter(pk=first.pk).update(max_pages=5)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        crawl_job_retry(job=first)
    assert len(callbacks) == 1
    again = crawl_job_run(job_id=first.pk)
    assert again.status == "succeeded" and again.accepted == 8 and again.attempts == 2
    assert Image.objects.count() == 8


# --- collection plans -------------------------------------------------------------------------------

def test_split_quota():
    assert split_quota(100, 2) == [50, 50] and split_quota(7, 3) == [3, 2, 2] and split_quota(1, 2) == [1, 0]


def test_collection_plan_splits_each_quota_over_the_sources_that_know_the_character(crawl_settings, character):
    series = Series.objects.get(slug="genshin-impact")
    only_gel = Character.objects.create(series=series, slug="keqing", name="Keqing",
                                        booru_tags={"safebooru": "keqing_(genshin_impact)"})
    unknown = Character.objects.create(series=series, slug="nobody", name="Nobody")
    jobs = collection_plan_create(targets=[(character, 101), (only_gel, 60), (unknown, 80)],
                                  sources=["safebooru", "safebooru_donmai", "waifu_pics"])
    assert sorted((j.character.slug, j.source, j.quota, j.query) for j in jobs) == [
        ("hu-tao", "safebooru", 51, "hu_tao"),
        ("hu-tao", "safebooru_donmai", 50, "hu_tao"),
        ("keqing", "safebooru", 60, "keqing_(genshin_impact)"),
    ]
    assert {j.origin for j in jobs} == {"plan"}
    default = collection_plan_create(targets=[(character, 10)])  # KYARA_CRAWL_PLAN_SOURCES
    assert sorted(j.source for j in default) == ["safebooru", "safebooru_donmai"]
    with pytest.raises(ServiceError):
        collection_plan_create(targets=[(character, 10)], sources=["nope"])


# --- the command -------------------------------------------------------------------------------------

def test_crawl_command_sync_json(world, crawl_settings, character):
    clean_world(world, count=4)
    out = io.StringIO()
    call_command("crawl", "--source", "safebooru", "--character", "hu-tao", "--quota", "3", "--sync", "--json",
                 stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["status"] == "succeeded" and summary["accepted"] == 3 and summary["character"] == "hu-tao"
    assert set(summary) >= {"listed", "skipped_known", "downloaded", "exact_duplicates", "near_duplicates",
                            "too_small", "refused", "errors_by_kind"}


def test_crawl_command_unlabelled_and_errors(world, crawl_settings, character):
    clean_world(world, count=3)
    out = io.StringIO()
    call_command("crawl", "--source", "url_list", "--unlabelled", "--quota", "5", "--query", "urls.txt", "--sync",
                 stdout=out)
    assert "succeeded" in out.getvalue()
    assert Image.objects.filter(character=None).count() == 3
    with pytest.raises(CommandError, match="unlabelled_source"):
        call_command("crawl", "--source", "waifu_pics", "--character", "hu-tao", "--quota", "1")
    with pytest.raises(CommandError, match="No character"):
        call_command("crawl", "--source", "danbooru", "--character", "ghost", "--quota", "1")


@pytest.mark.backend
def test_a_job_whose_worker_died_is_marked_and_can_be_retried(crawl_settings, character):
    from datetime import timedelta

    from django.utils import timezone

    from apps.core.jobs import jobs_mark_lost

    job = crawl_job_create(source="danbooru", character=character, quota=3, queue=False)
    long_ago = timezone.now() - timedelta(hours=1)
    CrawlJob.objects.filter(pk=job.pk).update(status="running", started_at=long_ago, heartbeat_at=long_ago)
    crawl_job_retry(job=job)  # a running job without a heartbeat is retryable
    assert CrawlJob.objects.get(pk=job.pk).status == "queued"
    CrawlJob.objects.filter(pk=job.pk).update(status="running", heartbeat_at=long_ago)
    assert jobs_mark_lost() == {"crawling.CrawlJob": [job.pk]}
    job.refresh_from_db()
    assert (job.status, job.stop_reason) == ("failed", "worker_lost")


@pytest.mark.backend
def test_the_sweep_marks_dead_jobs_and_the_listing_shows_them(crawl_settings, character, api_client):
    from datetime import timedelta

    from django.utils import timezone

    from apps.core.jobs import jobs_mark_lost

    job = crawl_job_create(source="danbooru", character=character, quota=3, queue=False)
    alive = crawl_job_create(source="danbooru", character=character, quota=3, queue=False)
    long_ago = timezone.now() - timedelta(hours=1)
    CrawlJob.objects.filter(pk=job.pk).update(status="running", started_at=long_ago, heartbeat_at=long_ago)
    CrawlJob.objects.filter(pk=alive.pk).update(status="running", started_at=timezone.now(),
                                                heartbeat_at=timezone.now())
    assert jobs_mark_lost() == {"crawling.CrawlJob": [job.pk]}
    listed = {j["id"]: j["status"] for j in api_client.get("/api/v1/crawl-jobs/").json()["results"]}
    assert listed == {job.pk: "failed", alive.pk: "running"}
