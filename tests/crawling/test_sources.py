"""The adapter contract: every registered source against the fake world on 127.0.0.1, faults included."""
from __future__ import annotations

import pytest

from apps.characters.models import Image
from apps.crawling.models import CrawlJob, SeenPost
from apps.crawling.services import crawl_job_create, crawl_job_run
from apps.crawling.sources import build_source, sources
from apps.crawling.sources.base import Candidate
from apps.crawling.sources.http import FetchError
from tests.crawling.conftest import BOORU_SOURCES, STANDARD_ACCEPTED, TAG

pytestmark = pytest.mark.django_db

# How the contract reaches each adapter: (query, labelled). A new adapter needs a line here.
CONTRACT = {
    "danbooru": ("", True),
    "safebooru_donmai": ("", True),
    "gelbooru": ("", True),
    "safebooru": ("", True),
    "waifu_pics": ("waifu", False),
    "url_list": ("urls.txt", True),
    "local_folder": ("world", True),
}


def run_job(name, character, query, **options):
    job = crawl_job_create(source=name, character=character, query=query, quota=options.pop("quota", 100),
                           queue=False, **options)
    return crawl_job_run(job_id=job.pk)


def test_every_registered_source_has_a_contract_entry():
    assert set(sources.names()) <= set(CONTRACT), "add the new adapter to CONTRACT"
    assert {"danbooru", "safebooru_donmai", "gelbooru", "safebooru", "waifu_pics", "local_folder",
            "url_list"} <= set(sources.names())


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_source_contract(name, world, crawl_settings, character, settings):
    query, labelled = CONTRACT[name]
    network = name != "local_folder"
    if not network:
        world.write_folder(crawl_settings / "world")
    who = character if labelled else None

    job = run_job(name, who, query)

    assert job.status == CrawlJob.Status.SUCCEEDED, job.error
    assert job.accepted == STANDARD_ACCEPTED
    images = Image.objects.filter(source_site=name)
    assert images.count() == STANDARD_ACCEPTED == Image.objects.count()
    assert set(images.values_list("source_kind", "status")) == {("crawl", "pending")}
    assert set(images.values_list("character", flat=True)) == {who.pk if who else None}
    assert all(images.values_list("source_post_id", flat=True))
    assert job.too_small == 2  # one refused from the listing's size (boorus) or by ingest, one by ingest
    if name in BOORU_SOURCES:
        assert job.exact_duplicates == 0  # the copy was skipped by its md5, before any download
        assert set(images.values_list("source_tags", flat=True)[:1][0]) == {TAG, "1girl", "solo"}
        assert images.first().source_url.startswith(world.root)
    else:
        assert job.exact_duplicates == 1
    if network:
        assert job.skipped_known >= 1  # posts listed twice (within and across pages)
        expected = {"truncated": 1, "private_address": 1}
        if name == "url_list":
            expected["bad_scheme"] = 1  # an ftp:// line
        assert job.errors_by_kind == expected
        assert job.refused == 1 and job.refused_by_reason  # the file cut short without a length
        for kind in ("r429", "flaky500", "slow"):
            post = next(p for p in world.posts if p.kind == kind)
            assert world.hits[f"/img/{post.id}.png"] == 2, kind  # failed once, retried once, stored
        r429 = next(p for p in world.posts if p.kind == "r429")
        first, second = world.hit_times[f"/img/{r429.id}.png"]
        assert second - first >= settings.KYARA_CRAWL_MAX_RETRY_AFTER * 0.8  # Retry-After honoured (capped)
        assert all(settings.KYARA_CRAWL_CONTACT in agent for agent in world.user_agents)
        assert "private.png" not in str(world.hits)  # the redirect target was refused, not fetched
    else:
        assert job.errors == 0 and job.refused == 2  # the two cut-short files

    # A second run of the same job adds nothing and downloads nothing.
    before = dict(world.hits)
    again = run_job(name, who, query)
    assert again.status == CrawlJob.Status.SUCCEEDED, again.error
    assert again.accepted == 0 and again.downloaded == 0
    assert Image.objects.count() == STANDARD_ACCEPTED
    ok_paths = [f"/img/{p.id}.png" for p in world.posts if p.kind == "ok"]
    assert all(world.hits.get(path, 0) == before.get(path, 0) for path in ok_paths)


@pytest.mark.parametrize("name", ["danbooru", "gelbooru", "waifu_pics"])
def test_endless_listing_stops_at_the_quota(name, world, crawl_settings, character):
    world.posts = []
    world.endless = True
    job = run_job(name, character if name != "waifu_pics" else None, CONTRACT[name][0], quota=4)
    assert job.status == CrawlJob.Status.SUCCEEDED
    assert (job.stop_reason, job.accepted) == ("quota", 4)
    assert Image.objects.count() == 4


@pytest.mark.parametrize("name", ["danbooru", "safebooru"])
def test_endless_listing_of_useless_posts_stops_at_the_page_cap(name, world, crawl_settings, character):
    world.posts = []
    world.endless = True
    world.endless_kind = "tiny"  # every post too small by its listing: nothing is ever downloaded
    job = run_job(name, character, "", quota=10, max_pages=3)
    assert (job.status, job.stop_reason, job.pages) == (CrawlJob.Status.SUCCEEDED, "page_cap", 3)
    assert job.downloaded == 0 and job.too_small >= 15
    assert not any(path.startswith("/img/") for path in world.hits)


def test_danbooru_sends_credentials_from_settings(world, crawl_settings, settings):
    settings.KYARA_CRAWL_CREDENTIALS = {"danbooru": {"login": "kyara", "api_key": "secret"}}
    adapter = build_source("danbooru")
    first_page = next(iter(adapter.list(TAG)))
    assert first_page and all(isinstance(c, Candidate) for c in first_page)
    assert world.params_seen[-1]["login"] == "kyara" and world.params_seen[-1]["api_key"] == "secret"
    assert adapter.describe()["settings_schema"] == {"login": "Danbooru user name", "api_key": "API key of that user"}


def test_gelbooru_resumes_below_an_id_with_the_id_metatag(world, crawl_settings):
    below = [p.id for p in world.posts if p.id < 110]
    world.across_page_dup = world.within_page_dup = False  # no repeat may excuse an id at or above 110
    page = [int(c.post_id) for c in next(iter(build_source("safebooru").list(TAG, before=110)))]
    assert world.params_seen[-1]["tags"].split() == [TAG, "id:<110"]
    assert page and page == below[: len(page)]  # the newest posts below the id, in order
    # A live site repeats the boundary post when new posts arrived: that one, once, first; nothing else above.
    world.across_page_dup = True
    page = [int(c.post_id) for c in next(iter(build_source("safebooru").list(TAG, before=110)))]
    assert page[0] == 110 and page[1:] == below[: len(page) - 1]


def test_gelbooru_refuses_a_doctype():
    from apps.crawling.sources.booru_gelbooru import parse_posts

    with pytest.raises(FetchError) as info:
        parse_posts(b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><posts/>')
    assert info.value.kind == "bad_listing"


def test_local_folder_refuses_paths_outside_its_root(crawl_settings, character):
    from apps.core.api import ServiceError  # noqa: F401 - the job fails, it does not raise

    job = run_job("local_folder", character, "../../etc")
    assert job.status == CrawlJob.Status.FAILED
    assert "outside_root" in job.error


def test_url_list_reads_a_local_file_below_the_root(world, crawl_settings, character, settings):
    settings.KYARA_SOURCE_ROOTS = {**settings.KYARA_SOURCE_ROOTS, "url_list": ""}
    (crawl_settings / "list.txt").write_text(f"{world.root}/img/120.png\n# comment\n\n{world.root}/img/119.png\n")
    job = run_job("url_list", character, "list.txt")
    assert job.accepted == 2
    assert SeenPost.objects.filter(source="url_list").count() == 2


def test_a_plugin_adapter_loads_from_entry_points_and_a_broken_one_is_recorded(monkeypatch, crawl_settings):
    from apps.core import plugins
    from apps.crawling.sources import Source, load_source_plugins
    from apps.crawling.sources.http import Politeness

    class TinySite(Source):
        description = "a plugin"
        default_root = "https://tiny.example"
        politeness = Politeness(rate=0.5, concurrency=1)

        def list(self, query, *, before=None):
            yield [Candidate(post_id="1", url=f"{self.root}/1.png")]

    class EntryPoint:
        def __init__(self, name, value, target):
            self.name, self.value, self.group, self._target = name, value, "kyara.sources", target

        def load(self):
            if isinstance(self._target, Exception):
                raise self._target
            return self._target

    fake = [EntryPoint("tiny_site", "tiny:TinySite", TinySite), EntryPoint("broken", "broken:X", ImportError("no"))]
    monkeypatch.setattr(plugins, "entry_points", lambda group: fake if group == "kyara.sources" else [])
    try:
        assert load_source_plugins() == ["tiny_site"]
        adapter = build_source("tiny_site")
        assert adapter.politeness.rate == 0.5 and next(iter(adapter.list("x")))[0].url == "https://tiny.example/1.png"
        assert sources.origin("tiny_site") == "plugin tiny:TinySite"
        from apps.crawling.selectors import source_registry_snapshot

        rows = {row["name"]: row for row in source_registry_snapshot()}
        assert rows["broken"]["error"].startswith("ImportError") and rows["tiny_site"]["error"] == ""
    finally:
        sources.unregister("tiny_site")
