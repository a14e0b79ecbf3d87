"""The crawl's checks as steps: each refuses what it should, a source orders and chooses them, a job's options
switch them, and new pending images go to the review task (with the auto-review policy when the job has one)."""
from __future__ import annotations

import pytest

from apps.characters.models import Image
from apps.characters.services import IngestResult
from apps.core.api import ServiceError
from apps.crawling.models import CrawlJob, SeenPost
from apps.crawling.services import crawl_job_create, crawl_job_run
from apps.crawling.sources import build_source, sources
from apps.crawling.sources.base import Candidate
from apps.crawling.sources.booru_danbooru import DanbooruSource
from apps.crawling.steps import SUGGEST_TASK, Refusal, Suggest, assemble_steps
from tests.conftest import queued_tasks
from tests.crawling.conftest import standard_posts

pytestmark = pytest.mark.django_db


def run(source="danbooru", character=None, query="", quota=100, **options):
    job = crawl_job_create(source=source, character=character, query=query, quota=quota, queue=False, **options)
    return crawl_job_run(job_id=job.pk)


def clean_world(world, kinds, top=120):
    world.posts = standard_posts(kinds, top=top)
    world.within_page_dup = world.across_page_dup = False


def names(job: CrawlJob) -> list[str]:
    return [step["name"] for step in job.steps]


@pytest.fixture
def suggestion_tasks():
    """Reads the review tasks queued since the test began, oldest first: (image ids, keyword arguments), from
    whichever broker the settings name."""
    queued_tasks()  # start from an empty queue
    seen: list[dict] = []

    def read() -> list[tuple[list[int], dict]]:
        seen.extend(task for task in queued_tasks() if task.get("func") == SUGGEST_TASK)
        return [(list(task["args"][0]), task["kwargs"]) for task in seen]

    return read


def steps_for(source_name: str, **job_options):
    source = build_source(source_name)
    source.close()
    return assemble_steps(CrawlJob(source=source_name, quota=1, **job_options), source)


def post(post_id="1", **fields) -> Candidate:
    return Candidate(post_id=post_id, url=fields.pop("url", f"http://127.0.0.1/{post_id}.png"), **fields)


# --- each step alone ------------------------------------------------------------------------------------

def test_each_listing_step_refuses_what_it_should(crawl_settings, settings):
    settings.KYARA_CRAWL_MAX_RATING = "sensitive"
    steps = steps_for("danbooru", solo=True)
    by_name = {step.name: step for step in steps.checks}
    assert list(by_name) == ["known", "has_file", "min_side", "rating", "solo"]
    solo = ("hu_tao", "solo")
    assert by_name["has_file"].check(post(url="")) == Refusal("no_file")
    assert by_name["min_side"].check(post(width=40, height=500)) == Refusal("too_small", counter="too_small")
    assert by_name["min_side"].check(post()) is None  # the listing did not say: the decoder will
    assert by_name["rating"].check(post(rating="questionable")) == Refusal("rating")
    assert by_name["rating"].check(post(rating="sensitive")) is None
    assert by_name["solo"].check(post(tags=("hu_tao", "2girls"))) == Refusal("not_solo")
    assert by_name["solo"].check(post(tags=solo)) is None
    # In order, the first refusal wins: a tiny group picture counts as too small here.
    assert steps.check(post(tags=("hu_tao",), width=40, height=40)) == Refusal("too_small", counter="too_small")
    assert steps.check(post("9", tags=solo, width=96, height=96, rating="general")) is None

    SeenPost.objects.create(source="danbooru", post_id="5", md5="a" * 32, outcome="new")
    known = by_name["known"]
    page = [post("5"), post("6", md5="a" * 32), post("7", md5="b" * 32), post("8", md5="b" * 32)]
    known.prepare(page)
    assert [known.check(p) for p in page] == [
        Refusal("known", counter="skipped_known"),  # this source's id, decided before
        Refusal("known", counter="skipped_known"),  # the same file under another id
        None,
        Refusal("known", counter="skipped_known"),  # the same file earlier in this run
    ]
    with pytest.raises(ValueError, match="one of pages"):
        Refusal("x", counter="nonsense")  # a step cannot count under a counter the job does not have


def test_the_ingest_steps_set_the_ingest_and_name_its_counters(crawl_settings, settings):
    settings.KYARA_MIN_IMAGE_SIDE = 48
    steps = steps_for("danbooru")
    options = steps.ingest_options()
    assert (options.min_side, options.near_duplicate_policy, options.status) == (48, "refuse", None)
    assert steps_for("danbooru", approve=True).ingest_options().status == Image.Status.APPROVED
    assert [steps.judge(result) for result in (
        IngestResult("new"), IngestResult("exact_duplicate"), IngestResult("near_duplicate", reason="near_duplicate"),
        IngestResult("refused", reason="too_small"), IngestResult("refused", reason="truncated"),
    )] == [("new", "accepted"), ("exact_duplicate", "exact_duplicates"), ("near_duplicate", "near_duplicates"),
           ("too_small", "too_small"), ("truncated", "refused")]


# --- single-character posts ---------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["danbooru", "gelbooru"])
def test_a_solo_crawl_refuses_group_pictures_before_download(world, crawl_settings, character, source):
    clean_world(world, ["ok"] * 8)
    groups = world.posts[1::3]
    for group in groups:
        group.solo = False
    job = run(source, character=character, solo=True)
    assert job.status == "succeeded" and "solo" in names(job)
    assert job.refused_by_reason == {"not_solo": len(groups)} and job.refused == len(groups)
    assert job.accepted == 8 - len(groups) == Image.objects.count()
    assert all(world.hits[f"/img/{p.id}.png"] == 0 for p in groups)  # never downloaded
    assert SeenPost.objects.filter(outcome="not_solo").count() == len(groups)
    assert all("solo" in tags for tags in Image.objects.values_list("source_tags", flat=True))


def test_solo_is_off_by_default_and_ignored_with_a_note_where_posts_carry_no_tags(world, crawl_settings, character):
    clean_world(world, ["ok"] * 3)
    world.posts[0].solo = False
    default = crawl_job_create(source="danbooru", character=character, quota=5, queue=False)
    assert default.solo is None and "solo" not in names(default)  # the boorus' default: every post
    job = run("url_list", character=character, query="urls.txt", solo=True)
    (note,) = [step["note"] for step in job.steps if step["name"] == "solo"]
    assert note.startswith("ignored: url_list posts carry no tags")
    assert job.accepted == 3 and job.refused_by_reason == {}


# --- composition: per source and per job ----------------------------------------------------------------

class SoloFirstSource(DanbooruSource):
    """A site that checks the tags before the size and keeps near-duplicates in their group."""

    steps = ("known", "has_file", "solo", "min_side", "rating", "decode", "exact_duplicate", "suggest")


@pytest.fixture
def solo_first(crawl_settings, settings, world):
    name = "solo_first"
    sources.register(name, SoloFirstSource.for_site(root=world.root, rate=500, concurrency=4))
    settings.KYARA_SOURCE_ROOTS = {**settings.KYARA_SOURCE_ROOTS, name: world.root}
    yield name
    sources.unregister(name)


def test_a_source_orders_and_chooses_its_steps(world, solo_first, character):
    kinds = ["ok", "ok", "tiny", "resized", "ok"]  # a tiny picture, and a near-duplicate of the newest one
    clean_world(world, kinds)
    world.posts[2].solo = False  # the tiny one is also a group picture
    default = run("danbooru", character=character, solo=True)
    assert (default.too_small, default.refused_by_reason, default.near_duplicates, default.accepted) == (1, {}, 1, 3)

    clean_world(world, kinds, top=220)  # other pictures: nothing is known by md5
    world.posts[2].solo = False
    custom = run(solo_first, character=character, solo=True)
    assert names(custom) == ["known", "has_file", "solo", "min_side", "decode", "exact_duplicate", "suggest"]
    assert (custom.too_small, custom.refused_by_reason) == (0, {"not_solo": 1})  # solo is checked first here
    assert (custom.near_duplicates, custom.accepted) == (0, 4)  # no near_duplicate step: the copy is kept...
    kept = Image.objects.filter(source_site=solo_first)
    assert kept.count() == 4 and len(set(kept.values_list("dup_group", flat=True))) == 3  # ...in its group


def test_a_jobs_options_switch_its_steps(crawl_settings, character, settings):
    plain = crawl_job_create(source="danbooru", character=character, quota=5, queue=False)
    assert names(plain) == ["known", "has_file", "min_side", "decode", "exact_duplicate", "near_duplicate", "suggest"]
    assert {step["stage"] for step in plain.steps} == {"listing", "download", "stored"}
    settings.KYARA_CRAWL_MAX_RATING = "general"
    full = crawl_job_create(source="danbooru", character=character, quota=5, queue=False, solo=True, approve=True,
                            auto_approve_min_confidence=0.9)
    assert names(full) == ["known", "has_file", "min_side", "rating", "solo", "decode", "exact_duplicate",
                           "near_duplicate", "approve", "suggest"]
    suggest = {step["name"]: step["note"] for step in full.steps}["suggest"]
    assert "≥ 0.9" in suggest and "≥" not in {step["name"]: step["note"] for step in plain.steps}["suggest"]
    assert "solo" not in names(crawl_job_create(source="danbooru", character=character, quota=5, queue=False,
                                                solo=False))


@pytest.mark.parametrize(("steps", "message"), [
    (("known", "decode", "exact_duplicate", "sharpness"), "Unknown crawl step(s) sharpness; known: approve"),
    (("known", "exact_duplicate"), "missing: decode"),
    (("has_file", "known", "decode", "exact_duplicate"), "known step comes first"),
])
def test_a_source_with_a_wrong_step_list_is_refused_before_anything_runs(crawl_settings, character, world, steps,
                                                                         message):
    class Broken(DanbooruSource):
        pass

    Broken.steps = steps
    sources.register("broken", Broken.for_site(root=world.root, rate=500, concurrency=4))
    try:
        with pytest.raises(ServiceError) as info:
            crawl_job_create(source="broken", character=character, quota=5, queue=False)
    finally:
        sources.unregister("broken")
    assert info.value.code == "bad_steps" and message in info.value.message
    assert not CrawlJob.objects.exists()


# --- suggestions and the auto-review policy ---------------------------------------------------------------

@pytest.mark.backend
def test_new_pending_images_go_to_the_review_task_with_the_jobs_policy(world, crawl_settings, character,
                                                                      suggestion_tasks):
    clean_world(world, ["ok", "ok", "copy", "ok"])  # the copy is an exact duplicate: stored once
    with_policy = run(character=character, auto_approve_min_confidence=0.8)
    stored = sorted(Image.objects.values_list("pk", flat=True))
    assert with_policy.accepted == 3 == len(stored)
    assert [(sorted(ids), kwargs) for ids, kwargs in suggestion_tasks()] == [
        (stored, {"auto_approve_min_confidence": 0.8})]

    clean_world(world, ["ok", "ok"], top=300)
    run(character=character)  # no policy: suggestions only
    newer = sorted(Image.objects.exclude(pk__in=stored).values_list("pk", flat=True))
    assert [(sorted(ids), kwargs) for ids, kwargs in suggestion_tasks()[1:]] == [(newer, {})]

    clean_world(world, ["ok"], top=400)
    approved = run(character=character, approve=True, auto_approve_min_confidence=0.8)
    assert approved.accepted == 1 and len(suggestion_tasks()) == 2  # approved already: nothing to review


@pytest.mark.backend
def test_suggestions_go_out_in_batches_while_the_crawl_runs_and_the_rest_at_its_end(suggestion_tasks):
    step = Suggest(0.5, batch=2)
    for pk, status in [(1, "pending"), (2, "approved"), (3, "pending"), (4, "pending")]:
        step.stored(Image(pk=pk, status=status))
    assert suggestion_tasks() == [([1, 3], {"auto_approve_min_confidence": 0.5})]  # a full batch goes at once
    step.finish()
    step.finish()  # nothing left: nothing sent twice
    assert suggestion_tasks()[1:] == [([4], {"auto_approve_min_confidence": 0.5})]
