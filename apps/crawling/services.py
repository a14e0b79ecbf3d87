"""Every state change of the crawling app. The API, admin, command, tasks and planners call these."""
from __future__ import annotations

import logging
import math
import threading
from typing import Any

from django.db import transaction

from apps.characters.models import Character
from apps.core.api import ServiceError
from apps.core.jobs import JobWatcher, job_cancel, job_claim, job_finish, job_requeue
from apps.core.queue import enqueue
from apps.core.registry import RegistryError

from .models import COUNTER_FIELDS, CrawlJob
from .pipeline import CrawlRun
from .sources import FetchError, Source, build_source
from .steps import assemble_steps

logger = logging.getLogger(__name__)

MAX_QUOTA = 10_000
ORIGINS = ("api", "admin", "cli", "plan")
RUN_TASK = "apps.crawling.tasks.run_crawl_job"


def _source(name: str) -> Source:
    try:
        return build_source(name)
    except RegistryError as exc:
        raise ServiceError("unknown_source", str(exc)) from None


def _enqueue_after_commit(job: CrawlJob) -> None:
    def _send() -> None:
        task_id = enqueue(RUN_TASK, job.pk, group=f"crawl-{job.pk}")
        CrawlJob.objects.filter(pk=job.pk, task_id="").update(task_id=str(task_id or "")[:64])

    transaction.on_commit(_send)


def auto_approve_validate(value: Any) -> float | None:
    """The auto-review threshold: None (off) or a number above 0 and at most 1 (a probability of the model)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 < value <= 1:
        raise ServiceError(
            "invalid_auto_approve",
            f"auto_approve_min_confidence must be above 0 and at most 1 (e.g. 0.9), or empty for no auto-review; "
            f"got {value!r}.",
        )
    return float(value)


def crawl_job_prepare(*, source: str, character: Character | None, query: str, quota: int) -> tuple[Source, str]:
    """Check a job's parameters; return the adapter and the query it will run (the character's tags
    when none is given). Forms call it to show errors before anything is created."""
    adapter = _source(source)
    if isinstance(quota, bool) or not isinstance(quota, int) or not 1 <= quota <= MAX_QUOTA:
        raise ServiceError("invalid_quota", f"The quota must be a whole number from 1 to {MAX_QUOTA:,}.")
    if character is not None and not adapter.labelled:
        raise ServiceError(
            "unlabelled_source",
            f"{source} images carry no character label; start it without a character (the unlabelled pool).",
        )
    query = (query or "").strip()
    if not query and character is not None:
        query = adapter.default_query(character)
        if not query:
            raise ServiceError(
                "no_query",
                f"{character.slug} has no tags for {source} (booru_tags[{adapter.tag_family or source!r}]); "
                "give a query or add the tags to the character.",
            )
    query = query or adapter.default_query(None)
    if not query and adapter.listing != "endless":
        raise ServiceError("no_query", f"{source} needs a query (tags, a folder or a file of URLs).")
    adapter.close()
    return adapter, query


@transaction.atomic
def crawl_job_create(
    *,
    source: str,
    quota: int,
    character: Character | None = None,
    query: str = "",
    approve: bool = False,
    solo: bool | None = None,
    auto_approve_min_confidence: float | None = None,
    max_pages: int | None = None,
    threads: int | None = None,
    requested_by=None,
    origin: str = "api",
    evaluation_run_id: int | None = None,
    queue: bool = True,
) -> CrawlJob:
    """Create a crawl job and (after commit) queue it; ``queue=False`` leaves it for a caller to run.

    ``solo``: only single-character posts (None: the source's default); ``auto_approve_min_confidence``: the
    auto-review policy (None: off). The job records the steps it will run, as the source and these options
    assemble them."""
    adapter, query = crawl_job_prepare(source=source, character=character, query=query, quota=quota)
    if origin not in ORIGINS:
        raise ServiceError("invalid_origin", f"origin must be one of {', '.join(ORIGINS)}.")
    job = CrawlJob(
        source=source, query=query, character=character, quota=quota, approve=approve, solo=solo,
        auto_approve_min_confidence=auto_approve_validate(auto_approve_min_confidence), max_pages=max_pages,
        threads=threads, requested_by=requested_by if getattr(requested_by, "pk", None) else None, origin=origin,
        evaluation_run_id=evaluation_run_id,
    )
    try:
        job.steps = assemble_steps(job, adapter).describe()
    except ValueError as exc:  # the adapter lists a step that does not exist, or leaves out a required one
        raise ServiceError("bad_steps", f"{source}: {exc}") from None
    job.full_clean()
    job.save()
    if queue:
        _enqueue_after_commit(job)
    return job


def crawl_job_cancel(*, job: CrawlJob) -> CrawlJob:
    """A queued job ends at once; a running one is asked to stop and does within seconds."""
    return job_cancel(job, refused_code="not_active")


@transaction.atomic
def crawl_job_retry(*, job: CrawlJob) -> CrawlJob:
    """Queue a failed or cancelled job (or one whose worker died) again; it keeps its counters, so it
    collects only what is left of its quota, and its cursor, so it lists only what it has not seen. A
    process still running under the old launch token can write nothing more and stops."""
    job = job_requeue(job, refused_code="not_retryable", task_id="")
    _enqueue_after_commit(job)
    return job


def crawl_job_run(*, job_id: int) -> CrawlJob | None:
    """Run a queued job to its end in this process (the task, or ``crawl --sync``)."""
    job = job_claim(CrawlJob, job_id)
    if job is None:  # a second delivery of the same task, or cancelled while queued
        return CrawlJob.objects.filter(pk=job_id).first()
    stop = threading.Event()
    status, error = CrawlJob.Status.SUCCEEDED, None
    with JobWatcher(job, stop):  # heartbeats while the run waits (Retry-After, downloads); cancel → stop
        try:
            source = build_source(job.source, stop=stop)
            reason = CrawlRun(job, source, query=job.query, stop=stop).execute()
            if reason == "cancelled":
                status = CrawlJob.Status.CANCELLED
        except FetchError as exc:
            status, reason, error = CrawlJob.Status.FAILED, "error", f"{exc.kind}: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - the job records any failure; the worker lives on
            logger.exception("crawl job %s failed", job.pk)
            status, reason, error = CrawlJob.Status.FAILED, "error", f"{type(exc).__name__}: {exc}"
    if job_finish(job, status=status, stop_reason=reason, error=error[:2000] if error else None):
        logger.info("crawl job %s %s (%s): %s", job.pk, status, reason, {k: getattr(job, k) for k in COUNTER_FIELDS})
    else:
        job.refresh_from_db()
    return job


def sources_for_character(character: Character, names: list[str] | None = None) -> list[str]:
    """The labelled sources, among ``names`` (default: KYARA_CRAWL_PLAN_SOURCES), that have tags for it."""
    from django.conf import settings

    known = []
    for name in names if names is not None else settings.KYARA_CRAWL_PLAN_SOURCES:
        adapter = _source(name)
        if adapter.labelled and adapter.default_query(character):
            known.append(name)
    return known


def split_quota(wanted: int, parts: int) -> list[int]:
    """``wanted`` spread over ``parts`` as evenly as whole numbers allow (the first ones take the rest)."""
    base, rest = divmod(wanted, parts)
    return [base + (1 if index < rest else 0) for index in range(parts)]


@transaction.atomic
def collection_plan_create(
    *,
    targets: list[tuple[Character, int]],
    requested_by=None,
    sources: list[str] | None = None,
    solo: bool = True,
    auto_approve_min_confidence: float | None = None,
    evaluation_run_id: int | None = None,
) -> list[CrawlJob]:
    """Crawl jobs for (character, wanted images): each quota split over the sources that know the
    character (have its tags). A character no source knows gets no job and is logged.

    Plans ask for single-character posts by default (the model is single-label); every job carries the
    plan's auto-review policy and the evaluation run it came from, if any."""
    if sources is not None:
        for name in sources:
            _source(name)  # unknown names fail before anything is created
    auto_approve_min_confidence = auto_approve_validate(auto_approve_min_confidence)
    jobs: list[CrawlJob] = []
    for character, wanted in targets:
        if wanted <= 0:
            continue
        names = sources_for_character(character, sources)
        if not names:
            logger.warning("collection plan: no source has tags for %s; add booru_tags to crawl it", character.slug)
            continue
        for name, quota in zip(names, split_quota(min(int(wanted), MAX_QUOTA), len(names)), strict=True):
            if quota > 0:
                jobs.append(crawl_job_create(
                    source=name, character=character, quota=quota, solo=solo,
                    auto_approve_min_confidence=auto_approve_min_confidence, requested_by=requested_by,
                    origin="plan", evaluation_run_id=evaluation_run_id,
                ))
    return jobs
