"""One run of a crawl job: list → drop repeats → the steps' checks on each post → download (a bounded
pool) → ingest (this thread, one writer) as the steps configure it → the steps see what was stored → count.
The checks themselves are small steps (``apps.crawling.steps``) assembled for the job; this module keeps the
loop, the pool, the cursor and the counters. Memory stays flat; every loop is bounded by the quota, the page
cap, the known-streak rule or a cancel.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from apps.characters.models import Image
from apps.characters.services import image_ingest
from apps.core.jobs import job_heartbeat

from .models import COUNTER_FIELDS, CrawlCursor, CrawlJob, SeenPost
from .sources import Cancelled, FetchError, Source
from .sources.base import Candidate
from .steps import KNOWN, CrawlSteps, assemble_steps

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5


def normalize_query(query: str) -> str:
    return " ".join(sorted(set(query.split())))


@dataclass
class Phase:
    """One pass over the listing from a starting point; remembers the order ids were listed in."""

    before: int | None
    listed: list[str] = field(default_factory=list)
    exhausted: bool = False
    streak: int = 0  # consecutive known posts, carried across its pages

    def decided_prefix(self, decided: set[str]) -> tuple[int, int, bool] | None:
        """(highest id, lowest id, complete) of the listed prefix whose posts are all decided."""
        ids: list[int] = []
        for post_id in self.listed:
            if post_id not in decided or not post_id.isdigit():
                break
            ids.append(int(post_id))
        if not ids:
            return None
        return max(ids), min(ids), len(ids) == len(self.listed)


def merge_cursor(cursor: CrawlCursor, phases: list[Phase], decided: set[str]) -> None:
    """Grow the cursor's done block by what this run decided without a hole next to it."""
    for phase in phases:
        prefix = phase.decided_prefix(decided)
        if prefix is None:
            continue
        high, low, complete = prefix
        if not cursor.has_block:
            cursor.newest_id, cursor.oldest_id = high, low
        elif low <= cursor.newest_id or phase.before == cursor.oldest_id:
            cursor.newest_id = max(cursor.newest_id, high)
            cursor.oldest_id = min(cursor.oldest_id, low)
        else:
            continue  # a stretch above the block with a gap: the archive still skips its posts
        if complete and phase.exhausted and low <= cursor.oldest_id:
            cursor.reached_end = True


class CrawlRun:
    def __init__(self, job: CrawlJob, source: Source, *, query: str, stop: threading.Event,
                 steps: CrawlSteps | None = None) -> None:
        self.job = job
        self.source = source
        self.steps = steps or assemble_steps(job, source)
        self.ingest_options = self.steps.ingest_options()
        self.query = query
        self.stop = stop
        self.threads = max(1, min(job.threads or settings.KYARA_CRAWL_THREADS, max(source.politeness.concurrency, 1)))
        self.max_pages = job.max_pages or settings.KYARA_CRAWL_MAX_PAGES
        self.stop_after_known = max(settings.KYARA_CRAWL_STOP_AFTER_KNOWN, 1)
        self.counts = {name: getattr(job, name) for name in COUNTER_FIELDS}
        self.refused_by_reason = Counter(job.refused_by_reason)
        self.errors_by_kind = Counter(job.errors_by_kind)
        self.ingest_seconds = job.ingest_seconds
        self.error = ""
        self.inflight: dict[Future, Candidate] = {}
        self.decided: set[str] = set()
        self.seen_in_run: set[str] = set()
        self._last_flush = 0.0

    # --- the loop ------------------------------------------------------------------------------------
    def execute(self) -> str:
        """Run until a stop condition; return the stop reason. Counters are flushed as it goes."""
        self.cursor, _ = CrawlCursor.objects.get_or_create(source=self.source.name, query=normalize_query(self.query))
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"crawl-{self.job.pk}")
        self.phases: list[Phase] = []
        try:
            reason = self._crawl()
            if reason != "cancelled":
                self._drain()
            return "cancelled" if self.stop.is_set() else reason
        except Cancelled:
            return "cancelled"
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.source.close()
            self._save_cursor()
            self.steps.finish()  # what it stored is kept whatever ended the run: it gets its suggestions
            self.flush(force=True)

    def _crawl(self) -> str:
        ordered = self.source.listing == "ordered"
        phase = Phase(before=None)
        self.phases.append(phase)
        while True:
            jump = None
            for page in self.source.list(self.query, before=phase.before):
                self.counts["pages"] += 1
                jump, stop_reason = self._take_page(page, phase, ordered)
                if stop_reason:
                    return stop_reason
                if jump is not None:
                    break
                if self.counts["pages"] >= self.max_pages:
                    return "page_cap"
                self.flush()
            else:
                phase.exhausted = True
            if jump is None:
                return "exhausted"
            phase = Phase(before=jump)
            self.phases.append(phase)

    def _take_page(self, page: list, phase: Phase, ordered: bool) -> tuple[int | None, str]:
        """Decide each candidate of a page in listing order; returns (jump below this id, stop reason)."""
        self.steps.prepare(page)
        for candidate in page:
            if self.stop.is_set():
                return None, "cancelled"
            if candidate.post_id in self.seen_in_run:
                self.counts[KNOWN] += 1  # listed twice (within or across pages)
                continue
            self.seen_in_run.add(candidate.post_id)
            self.counts["listed"] += 1
            phase.listed.append(candidate.post_id)
            refusal = self.steps.check(candidate)
            if refusal is not None and refusal.counter == KNOWN:
                self.counts[KNOWN] += 1
                self.decided.add(candidate.post_id)
                phase.streak += 1
                if phase.streak >= self.stop_after_known:
                    jump, reason = self._after_known_streak(candidate, phase, ordered)
                    if jump is not None or reason:
                        return jump, reason
                continue
            phase.streak = 0
            if refusal is not None:
                self._decide(candidate, refusal.reason, counter=refusal.counter)
                continue
            reason = self._submit(candidate)
            if reason:
                return None, reason
        return None, ""

    def _after_known_streak(self, candidate: Candidate, phase: Phase, ordered: bool) -> tuple[int | None, str]:
        if not ordered:
            return (None, "known_streak") if self.source.listing == "endless" else (None, "")
        number = candidate.numeric_id
        cursor = self.cursor
        if phase.before is None and cursor.has_block and number is not None and number <= cursor.newest_id:
            if cursor.reached_end:
                return None, "caught_up"
            return cursor.oldest_id, ""  # jump below the block seen before
        return None, ""  # above the block (a gap left by an earlier run) or no block yet: keep going

    def _submit(self, candidate: Candidate) -> str:
        """Queue a download, keeping accepted + in flight within the quota and the pool's width."""
        while self.inflight and (
            len(self.inflight) >= self.threads * 2 or self.counts["accepted"] + len(self.inflight) >= self.job.quota
        ):
            self._collect(timeout=FLUSH_SECONDS)
            if self.stop.is_set():
                return "cancelled"
        if self.counts["accepted"] >= self.job.quota:
            return "quota"
        self.inflight[self.pool.submit(self.source.fetch, candidate)] = candidate
        self._collect(timeout=0)
        self.flush()
        return "quota" if self.counts["accepted"] >= self.job.quota else ""

    def _drain(self) -> None:
        while self.inflight and not self.stop.is_set():
            self._collect(timeout=FLUSH_SECONDS)

    def _collect(self, *, timeout: float) -> None:
        if not self.inflight:
            return
        done, _ = wait(list(self.inflight), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            candidate = self.inflight.pop(future)
            self._ingest(candidate, future)
        self.flush()

    def _ingest(self, candidate: Candidate, future: Future) -> None:
        try:
            data = future.result()
        except Cancelled:
            return
        except FetchError as exc:
            self.counts["errors"] += 1
            self.errors_by_kind[exc.kind] += 1
            self.error = f"{candidate.url}: {exc.message}"
            return
        except Exception as exc:  # noqa: BLE001 - one bad post (a plugin bug) must not end the job
            logger.exception("crawl %s: fetching %s failed", self.job.pk, candidate.url)
            self.counts["errors"] += 1
            self.errors_by_kind["adapter_error"] += 1
            self.error = f"{candidate.url}: {type(exc).__name__}: {exc}"
            return
        self.counts["downloaded"] += 1
        options = self.ingest_options
        started = time.perf_counter()
        result = image_ingest(
            data=data,
            source_kind=Image.SourceKind.CRAWL,
            character=self.job.character,
            status=options.status,
            near_duplicate_policy=options.near_duplicate_policy,
            min_side=options.min_side,
            source_site=self.source.name,
            source_url=candidate.url if candidate.url.startswith(("http://", "https://")) else "",
            source_post_id=candidate.post_id,
            source_tags=list(candidate.tags),
            original_name=candidate.url.rsplit("/", 1)[-1][:255],
        )
        self.ingest_seconds += time.perf_counter() - started
        outcome, counter = self.steps.judge(result)
        md5 = candidate.md5 or hashlib.md5(data).hexdigest()
        self._decide(candidate, outcome, counter=counter, md5=md5, image=result.image)
        if counter == "accepted" and result.image is not None:
            self.steps.stored(result.image)

    def _decide(self, candidate: Candidate, outcome: str, *, counter: str, md5: str = "", image=None) -> None:
        self.counts[counter] += 1
        if counter == "refused":
            self.refused_by_reason[outcome] += 1
        self.decided.add(candidate.post_id)
        SeenPost.objects.bulk_create(
            [SeenPost(source=self.source.name, post_id=candidate.post_id, md5=md5 or candidate.md5, outcome=outcome,
                      image=image if image is not None and image.pk else None, job=self.job)],
            ignore_conflicts=True,
        )

    # --- bookkeeping -----------------------------------------------------------------------------------
    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < FLUSH_SECONDS:
            return
        self._last_flush = now
        values = dict(self.counts, refused_by_reason=dict(self.refused_by_reason),
                      errors_by_kind=dict(self.errors_by_kind), ingest_seconds=self.ingest_seconds,
                      steps=self.steps.describe())
        if self.error:
            values["error"] = self.error[:2000]
        quota = self.job.quota
        progress = min(self.counts["accepted"] / quota, 1.0) if quota else 1.0
        if not job_heartbeat(self.job, progress=progress, **values):
            self.stop.set()  # a retry took the job over (or it was marked lost): this run writes no more

    def _save_cursor(self) -> None:
        cursor = self.cursor
        if self.source.listing == "ordered":
            merge_cursor(cursor, self.phases, self.decided)
        cursor.runs += 1
        cursor.last_run_at = timezone.now()
        cursor.save()
