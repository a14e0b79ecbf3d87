"""The checks of a crawl as small steps, assembled per crawl from the source's list and the job's options.

In the spirit of waifuc's actions and gallery-dl's filters: each check is one small object, testable
alone, and a crawl is an ordered list of them. Unlike waifuc, a refusal is a result with a reason that
the job counts and the archive records, never a warning that vanishes. A step plays one of three roles:

- ``PostCheck`` (stage ``listing``): looks at what the listing says about a post (id, md5, tags, size,
  rating) and refuses it before any download. The first refusal wins, so the order is the source's.
- ``IngestCheck`` (stage ``download``): the bytes go through the one ingest service of the characters
  app, which decodes, dedupes and stores in one place for every way an image arrives; the step sets how
  it checks (``configure``) and names the job counter of what it refused (``counts``).
- ``AfterIngest`` (stage ``stored``): sees every image the crawl stored, then the end of the crawl.

A source names its steps in ``Source.steps``; ``build(job, source)`` makes each one for this crawl, or
returns None when the job's options switch it off. Third parties register more in ``crawl_steps``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from django.conf import settings

from apps.characters.models import Image
from apps.characters.services.curation import curation_changed
from apps.characters.services.ingest import IngestResult, NearDuplicatePolicy
from apps.core.queue import enqueue
from apps.core.registry import Registry

from .models import COUNTER_FIELDS, CrawlJob, SeenPost
from .sources.base import Candidate, Source, rating_allowed

Stage = Literal["listing", "download", "stored"]

# The review app computes the model's suggestions (and approves what it confirms); crawling sits below it and
# names the task by its dotted path only.
SUGGEST_TASK = "apps.review.tasks.suggest_images"
SUGGEST_BATCH = 50  # new images per suggestion task: they get suggestions while the crawl goes on

# Steps every crawl runs: ``known`` first (the incremental rerun and its cursor depend on it), and the
# ingest's own checks (a file that does not decode or is stored already is never stored twice).
REQUIRED_STEPS = ("known", "decode", "exact_duplicate")


@dataclass(frozen=True)
class Refusal:
    """Why a post was not stored: ``reason`` is the archive's outcome (and the key of refused_by_reason),
    ``counter`` the job counter it counts under."""

    reason: str
    counter: str = "refused"

    def __post_init__(self) -> None:
        if self.counter not in COUNTER_FIELDS:
            raise ValueError(f"A refusal counts under one of {', '.join(COUNTER_FIELDS)}, not {self.counter!r}")


KNOWN = "skipped_known"  # the counter of posts decided before: not a refusal, and not recorded again


@dataclass
class IngestOptions:
    """The ingest service's knobs that steps set. Without a ``near_duplicate`` step, near-duplicates are
    kept in their group (like an import) instead of refused."""

    min_side: int | None = None
    near_duplicate_policy: NearDuplicatePolicy = "keep"
    status: str | None = None


class Step:
    name: ClassVar[str]
    stage: ClassVar[Stage]

    def __init__(self, note: str = "") -> None:
        self.note = note  # what it does in this crawl, in words (the job and the admin show it)

    @classmethod
    def build(cls, job: CrawlJob, source: Source) -> Self | None:
        """This step for ``job`` on ``source``; None when the job's options switch it off."""
        return cls()

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "stage": self.stage, "note": self.note}


class PostCheck(Step):
    stage = "listing"

    def prepare(self, page: Sequence[Candidate]) -> None:
        """Called once per listed page before its posts are checked (one query per page, not per post)."""

    def check(self, post: Candidate) -> Refusal | None:
        raise NotImplementedError


class IngestCheck(Step):
    stage = "download"
    counts: ClassVar[dict[str, str]] = {}  # the ingest's outcome or refusal reason → job counter

    def configure(self, options: IngestOptions) -> None:
        """Set how the ingest checks the downloaded bytes."""


class AfterIngest(Step):
    stage = "stored"

    def stored(self, image: Image) -> None:
        """A new image this crawl stored."""

    def finish(self) -> None:
        """The crawl ends (whatever the reason): hand over what is left."""


crawl_steps: Registry[type[Step]] = Registry("crawl step")


# --- before download ----------------------------------------------------------------------------------

@crawl_steps.register("known")
class KnownPost(PostCheck):
    """Posts decided before (this source's id, or the same md5 anywhere or earlier in this run)."""

    name = "known"

    def __init__(self, source_name: str) -> None:
        super().__init__("posts decided before (by id on this source, by md5 anywhere) are skipped")
        self.source_name = source_name
        self.ids: set[str] = set()
        self.md5s: set[str] = set()
        self.md5_in_run: set[str] = set()

    @classmethod
    def build(cls, job: CrawlJob, source: Source) -> Self:
        return cls(source.name)

    def prepare(self, page: Sequence[Candidate]) -> None:
        ids = [c.post_id for c in page]
        md5s = [c.md5 for c in page if c.md5]
        self.ids = set(SeenPost.objects.filter(source=self.source_name, post_id__in=ids)
                       .values_list("post_id", flat=True))
        self.ids |= set(Image.objects.filter(source_site=self.source_name, source_post_id__in=ids)
                        .values_list("source_post_id", flat=True))
        self.md5s = set(SeenPost.objects.filter(md5__in=md5s).values_list("md5", flat=True)) if md5s else set()

    def check(self, post: Candidate) -> Refusal | None:
        md5 = post.md5
        if post.post_id in self.ids or (md5 and (md5 in self.md5s or md5 in self.md5_in_run)):
            return Refusal("known", counter=KNOWN)
        if md5:
            self.md5_in_run.add(md5)
        return None


@crawl_steps.register("has_file")
class HasFile(PostCheck):
    name = "has_file"

    def __init__(self) -> None:
        super().__init__("posts without a file URL are refused (no_file)")

    def check(self, post: Candidate) -> Refusal | None:
        return None if post.url else Refusal("no_file")


@crawl_steps.register("min_side")
class MinSide(PostCheck):
    """The size the listing states; the decode step checks the real one (a listing may lie)."""

    name = "min_side"

    def __init__(self, min_side: int) -> None:
        super().__init__(f"posts listed below {min_side} px on a side are refused (too_small)")
        self.min_side = min_side

    @classmethod
    def build(cls, job: CrawlJob, source: Source) -> Self:
        return cls(settings.KYARA_MIN_IMAGE_SIDE)

    def check(self, post: Candidate) -> Refusal | None:
        if post.width and post.height and min(post.width, post.height) < self.min_side:
            return Refusal("too_small", counter="too_small")
        return None


@crawl_steps.register("rating")
class RatingCeiling(PostCheck):
    name = "rating"

    def __init__(self, max_rating: str) -> None:
        super().__init__(f"posts rated above {max_rating} are refused (rating)")
        self.max_rating = max_rating

    @classmethod
    def build(cls, job: CrawlJob, source: Source) -> Self | None:
        ceiling = settings.KYARA_CRAWL_MAX_RATING
        return cls(ceiling) if ceiling else None

    def check(self, post: Candidate) -> Refusal | None:
        return None if rating_allowed(post.rating, self.max_rating) else Refusal("rating")


@crawl_steps.register("solo")
class SoloPost(PostCheck):
    """Single-character posts only: the model is single-label, so a group picture would teach it noise."""

    name = "solo"

    def __init__(self, tag: str, note: str) -> None:
        super().__init__(note)
        self.tag = tag

    @classmethod
    def build(cls, job: CrawlJob, source: Source) -> Self | None:
        if not (source.solo_default if job.solo is None else job.solo):
            return None
        if not source.solo_tag:
            return cls("", f"ignored: {source.name} posts carry no tags that say how many characters they show")
        return cls(source.solo_tag, f"posts not tagged {source.solo_tag} are refused (not_solo)")

    def check(self, post: Candidate) -> Refusal | None:
        if self.tag and self.tag not in post.tags:
            return Refusal("not_solo")
        return None


# --- after download (through the ingest service) ------------------------------------------------------

@crawl_steps.register("decode")
class Decode(IngestCheck):
    name = "decode"
    counts = {"too_small": "too_small"}  # every other refusal of the decoder counts as refused

    def __init__(self, min_side: int) -> None:
        super().__init__(f"the file must decode whole, within the limits, at least {min_side} px on a side")
        self.min_side = min_side

    @classmethod
    def build(cls, job: CrawlJob, source: Source) -> Self:
        return cls(settings.KYARA_MIN_IMAGE_SIDE)

    def configure(self, options: IngestOptions) -> None:
        options.min_side = self.min_side


@crawl_steps.register("exact_duplicate")
class ExactDuplicate(IngestCheck):
    name = "exact_duplicate"
    counts = {"exact_duplicate": "exact_duplicates"}

    def __init__(self) -> None:
        super().__init__("a file stored already (same sha256) is not stored again")


@crawl_steps.register("near_duplicate")
class NearDuplicate(IngestCheck):
    name = "near_duplicate"
    counts = {"near_duplicate": "near_duplicates"}

    def __init__(self) -> None:
        super().__init__("a near-duplicate (pHash) of a stored image is refused")

    def configure(self, options: IngestOptions) -> None:
        options.near_duplicate_policy = "refuse"


@crawl_steps.register("approve")
class Approve(IngestCheck):
    name = "approve"

    def __init__(self) -> None:
        super().__init__("new images are stored approved, not pending")

    @classmethod
    def build(cls, job: CrawlJob, source: Source) -> Self | None:
        return cls() if job.approve else None

    def configure(self, options: IngestOptions) -> None:
        options.status = Image.Status.APPROVED


# --- after the images are stored -----------------------------------------------------------------------

@crawl_steps.register("suggest")
class Suggest(AfterIngest):
    """Hands new pending images to the review app's task in batches: the model's suggestions for each, and
    with the job's auto-review policy, approval of those whose claimed label it confirms at or above it."""

    name = "suggest"

    def __init__(self, min_confidence: float | None, *, batch: int = SUGGEST_BATCH) -> None:
        note = "the model's suggestions for new pending images"
        if min_confidence is not None:
            note += f"; approved when it confirms the label at ≥ {min_confidence:g}"
        super().__init__(note)
        self.min_confidence = min_confidence
        self.batch = batch
        self.pending: list[int] = []
        self.enqueued: list[list[int]] = []
        self.approved = False  # images stored approved (the approve step): the galleries take them in

    @classmethod
    def build(cls, job: CrawlJob, source: Source) -> Self:
        return cls(job.auto_approve_min_confidence)

    def stored(self, image: Image) -> None:
        self.approved = self.approved or image.status == Image.Status.APPROVED
        if image.status == Image.Status.PENDING:
            self.pending.append(image.pk)
            if len(self.pending) >= self.batch:
                self.finish()

    def finish(self) -> None:
        if self.approved:
            self.approved = False
            curation_changed()
        if not self.pending:
            return
        ids, self.pending = self.pending, []
        options: dict[str, Any] = {}
        if self.min_confidence is not None:
            options["auto_approve_min_confidence"] = self.min_confidence
        enqueue(SUGGEST_TASK, ids, **options)
        self.enqueued.append(ids)


# --- one crawl's steps ---------------------------------------------------------------------------------

@dataclass
class CrawlSteps:
    """The steps of one crawl, in the source's order, split by the stage they act at."""

    steps: list[Step]
    checks: list[PostCheck] = field(init=False)
    ingest_checks: list[IngestCheck] = field(init=False)
    after_ingest: list[AfterIngest] = field(init=False)

    def __post_init__(self) -> None:
        self.checks = [s for s in self.steps if isinstance(s, PostCheck)]
        self.ingest_checks = [s for s in self.steps if isinstance(s, IngestCheck)]
        self.after_ingest = [s for s in self.steps if isinstance(s, AfterIngest)]

    def prepare(self, page: Sequence[Candidate]) -> None:
        for step in self.checks:
            step.prepare(page)

    def check(self, post: Candidate) -> Refusal | None:
        """The first refusal of the listing-stage steps, in order; None: download it."""
        for step in self.checks:
            refusal = step.check(post)
            if refusal is not None:
                return refusal
        return None

    def ingest_options(self) -> IngestOptions:
        options = IngestOptions()
        for step in self.ingest_checks:
            step.configure(options)
        return options

    def judge(self, result: IngestResult) -> tuple[str, str]:
        """(archive outcome, job counter) of an ingest result."""
        if result.outcome == "new":
            return "new", "accepted"
        outcome = result.outcome if result.outcome != "refused" else result.reason or "refused"
        for step in self.ingest_checks:
            if outcome in step.counts:
                return outcome, step.counts[outcome]
        return outcome, "refused"

    def stored(self, image: Image) -> None:
        for step in self.after_ingest:
            step.stored(image)

    def finish(self) -> None:
        for step in self.after_ingest:
            step.finish()

    def describe(self) -> list[dict[str, str]]:
        return [step.describe() for step in self.steps]


def check_step_names(names: Iterable[str]) -> list[str]:
    """``names`` as a list, if every one is registered and the required steps are there, ``known`` first;
    else ValueError with what is wrong (a source adapter's mistake, found before its first crawl)."""
    names = list(names)
    unknown = [name for name in names if name not in crawl_steps]
    if unknown:
        raise ValueError(f"Unknown crawl step(s) {', '.join(unknown)}; known: {', '.join(crawl_steps.names())}")
    missing = [name for name in REQUIRED_STEPS if name not in names]
    if missing:
        raise ValueError(f"Every crawl runs {', '.join(REQUIRED_STEPS)}; missing: {', '.join(missing)}")
    if names[0] != "known":
        raise ValueError("The known step comes first: the rerun's cursor counts on it")
    return names


def assemble_steps(job: CrawlJob, source: Source) -> CrawlSteps:
    """The steps of ``job`` on ``source``: the source's names in its order, each built for the job's options."""
    built = (crawl_steps.get(name).build(job, source) for name in check_step_names(source.steps))
    return CrawlSteps([step for step in built if step is not None])

