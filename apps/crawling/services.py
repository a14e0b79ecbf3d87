"""Every state change of the crawling app. The API, admin, command, tasks and planners call these."""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.characters.models import Character
from apps.core.api import ServiceError
from apps.core.queue import enqueue
from apps.core.registry import RegistryError

from .models import COUNTER_FIELDS, CrawlJob
from .pipeline import CancelWatcher, CrawlRun
from .sources import FetchError, Source, build_source

logger = logging.getLogger(__name__)

MAX_QUOTA = 10_000
ORIGINS = ("api", "admin", "cli", "plan")
# A running job whose worker has not written its counters for this long is taken for dead.
STALE_AFTER = timedelta(minutes=10)
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
    max_pages: int | None = None,
    threads: int | None = None,
    requested_by=None,
    origin: str = "api",
    start: bool = True,
) -> CrawlJob:
    """Create a crawl job and (after commit) queue it; ``start=False`` leaves it for a caller to run."""
    _adapter, query = crawl_job_prepare(source=source, character=character, query=query, quota=quota)
    if origin not in ORIGINS:
        raise ServiceError("invalid_origin", f"origin must be one of {', '.join(ORIGINS)}.")
    job = CrawlJob(
        source=source, query=query, character=character, quota=quota, approve=approve, max_pages=max_pages,
        threads=threads, requested_by=requested_by if getattr(requested_by, "pk", None) else None, origin=origin,
    )
    job.full_clean()
    job.save()
    if start:
        _enqueue_after_commit(job)
    return job


@transaction.atomic
def crawl_job_cancel(*, job: CrawlJob) -> CrawlJob:
    """A queued job ends at once; a running one is asked to stop and does within seconds."""
    job = CrawlJob.objects.select_for_update().get(pk=job.pk)
    if job.status not in CrawlJob.ACTIVE:
        raise ServiceError("not_active", f"Crawl job {job.pk} is {job.status}; only queued or running jobs cancel.",
                           status_code=409)
    job.cancel_requested = True
    fields = ["cancel_requested", "updated_at"]
    if job.status == CrawlJob.Status.QUEUED:
        job.status = CrawlJob.Status.CANCELLED
        job.stop_reason = "cancelled"
        job.finished_at = timezone.now()
        fields += ["status", "stop_reason", "finished_at"]
    job.save(update_fields=fields)
    return job


@transaction.atomic
def crawl_job_retry(*, job: CrawlJob) -> CrawlJob:
    """Queue a failed or cancelled job (or one whose worker died) again; it keeps its counters, so it
    collects only what is left of its quota, and its cursor, so it lists only what it has not seen."""
    job = CrawlJob.objects.select_for_update().get(pk=job.pk)
    stale = job.status == CrawlJob.Status.RUNNING and _is_stale(job)
    if job.status not in (CrawlJob.Status.FAILED, CrawlJob.Status.CANCELLED) and not stale:
        raise ServiceError("not_retryable", f"Crawl job {job.pk} is {job.status}; only failed or cancelled jobs "
                           "(or running ones whose worker died) can be retried.", status_code=409)
    job.status = CrawlJob.Status.QUEUED
    job.cancel_requested = False
    job.stop_reason = ""
    job.last_error = ""
    job.finished_at = None
    job.task_id = ""
    job.save(update_fields=["status", "cancel_requested", "stop_reason", "last_error", "finished_at", "task_id",
                            "updated_at"])
    _enqueue_after_commit(job)
    return job


def _is_stale(job: CrawlJob) -> bool:
    last = job.heartbeat_at or job.started_at or job.updated_at
    return last is None or timezone.now() - last > STALE_AFTER


def crawl_jobs_mark_stale() -> int:
    """Mark running jobs whose worker stopped writing as failed (the worker died); returns how many."""
    cutoff = timezone.now() - STALE_AFTER
    return CrawlJob.objects.filter(status=CrawlJob.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=CrawlJob.Status.FAILED, stop_reason="worker_lost", finished_at=timezone.now(),
        last_error="The worker stopped reporting; retry the job to continue where it left off.",
    )


def _claim(job_id: int) -> CrawlJob | None:
    """queued → running, once: a second delivery of the same task finds nothing to claim."""
    with transaction.atomic():
        job = CrawlJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != CrawlJob.Status.QUEUED:
            return None
        if job.cancel_requested:
            job.status = CrawlJob.Status.CANCELLED
            job.stop_reason = "cancelled"
            job.finished_at = timezone.now()
            job.save(update_fields=["status", "stop_reason", "finished_at", "updated_at"])
            return None
        job.status = CrawlJob.Status.RUNNING
        job.attempts += 1
        job.started_at = job.heartbeat_at = timezone.now()
        job.save(update_fields=["status", "attempts", "started_at", "heartbeat_at", "updated_at"])
        return job


def crawl_job_run(*, job_id: int) -> CrawlJob | None:
    """Run a queued job to its end in this process (the task, or ``crawl --sync``)."""
    job = _claim(job_id)
    if job is None:
        return CrawlJob.objects.filter(pk=job_id).first()
    stop = threading.Event()
    watcher = CancelWatcher(job.pk, stop)
    watcher.start()
    status, error = CrawlJob.Status.SUCCEEDED, ""
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
    finally:
        watcher.done.set()
        watcher.join(timeout=5)
    job.refresh_from_db()
    job.status = status
    job.stop_reason = reason
    job.finished_at = timezone.now()
    fields = ["status", "stop_reason", "finished_at", "updated_at"]
    if error:
        job.last_error = error[:2000]
        fields.append("last_error")
    job.save(update_fields=fields)
    logger.info("crawl job %s %s (%s): %s", job.pk, status, reason, {k: getattr(job, k) for k in COUNTER_FIELDS})
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
    *, targets: list[tuple[Character, int]], requested_by=None, sources: list[str] | None = None
) -> list[CrawlJob]:
    """Crawl jobs for (character, wanted images): each quota split over the sources that know the
    character (have its tags). A character no source knows gets no job and is logged."""
    if sources is not None:
        for name in sources:
            _source(name)  # unknown names fail before anything is created
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
                jobs.append(crawl_job_create(source=name, character=character, quota=quota,
                                             requested_by=requested_by, origin="plan"))
    return jobs

