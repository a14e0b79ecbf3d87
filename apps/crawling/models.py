"""Crawl jobs with live counters, the cursor per (source, query), and the archive of posts seen."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.characters.models import Character, Image
from apps.core.models import Job

# The integer counters of a job, in the order pages and the admin show them.
COUNTER_FIELDS = (
    "pages",
    "listed",
    "skipped_known",
    "downloaded",
    "accepted",
    "exact_duplicates",
    "near_duplicates",
    "too_small",
    "refused",
    "errors",
)


class CrawlJob(Job):
    """A crawl of one source for one character (or the unlabelled pool); ``progress`` is accepted / quota."""

    LOST_REASON = "worker_lost"

    source = models.CharField(max_length=60, db_index=True)
    query = models.CharField(max_length=500, blank=True, help_text="Empty: the character's tags for the site")
    character = models.ForeignKey(
        Character, null=True, blank=True, on_delete=models.PROTECT, related_name="crawl_jobs",
        help_text="Empty: the images go to the unlabelled pool",
    )
    quota = models.PositiveIntegerField(help_text="New accepted images to collect")
    approve = models.BooleanField(default=False, help_text="Accepted images are approved, not pending")
    max_pages = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: KYARA_CRAWL_MAX_PAGES")
    threads = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty: KYARA_CRAWL_THREADS")
    solo = models.BooleanField(
        null=True, blank=True, help_text="Only single-character posts (boorus: tagged solo); empty: the source's "
        "default. Sources whose posts carry no tags ignore it",
    )
    auto_approve_min_confidence = models.FloatField(
        null=True, blank=True, help_text="Auto-review: new images whose claimed label the model confirms at or "
        "above this probability (0 < p ≤ 1) are approved; the rest wait for a person. Empty: off",
    )
    evaluation_run_id = models.PositiveBigIntegerField(
        null=True, blank=True, db_index=True, help_text="The evaluation run whose collection plan created the job",
    )
    steps = models.JSONField(default=list, blank=True, help_text="The checks the crawl runs, in order: "
                             "[{name, stage, note}] (apps.crawling.steps)")
    origin = models.CharField(max_length=20, default="api", help_text="api, admin, cli, plan")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    stop_reason = models.CharField(max_length=20, blank=True, help_text="quota, exhausted, caught_up, known_streak, "
                                   "page_cap, cancelled, error, worker_lost")
    task_id = models.CharField(max_length=64, blank=True)
    ingest_seconds = models.FloatField(default=0.0)

    pages = models.PositiveIntegerField(default=0)
    listed = models.PositiveIntegerField(default=0)
    skipped_known = models.PositiveIntegerField(default=0)
    downloaded = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    exact_duplicates = models.PositiveIntegerField(default=0)
    near_duplicates = models.PositiveIntegerField(default=0)
    too_small = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0, help_text="Refused for reasons other than size")
    errors = models.PositiveIntegerField(default=0)
    refused_by_reason = models.JSONField(default=dict, blank=True)
    errors_by_kind = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["source", "status"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(auto_approve_min_confidence__isnull=True)
                | models.Q(auto_approve_min_confidence__gt=0, auto_approve_min_confidence__lte=1),
                name="crawl_job_auto_approve_in_0_1",
                violation_error_message="auto_approve_min_confidence must be above 0 and at most 1.",
            ),
        ]

    def __str__(self) -> str:
        who = self.character.slug if self.character_id else "unlabelled"
        return f"crawl #{self.pk} {self.source} → {who} ({self.status})"

    def lost_message(self) -> str:
        return "The worker stopped reporting; retry the job to continue where it left off."

    def counters(self) -> dict:
        values = {name: getattr(self, name) for name in COUNTER_FIELDS}
        values["refused_by_reason"] = dict(self.refused_by_reason)
        values["errors_by_kind"] = dict(self.errors_by_kind)
        return values


class CrawlCursor(models.Model):
    """What a (source, query) has seen: the contiguous block of post ids from ``newest_id`` down to
    ``oldest_id`` is done (listed and decided), so a rerun takes what is newer, then what is older."""

    source = models.CharField(max_length=60)
    query = models.CharField(max_length=500, help_text="Normalized: tags sorted")
    newest_id = models.BigIntegerField(null=True, blank=True)
    oldest_id = models.BigIntegerField(null=True, blank=True)
    reached_end = models.BooleanField(default=False, help_text="The block reaches the end of the listing")
    runs = models.PositiveIntegerField(default=0)
    last_run_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "query"], name="crawl_cursor_unique_query")]

    def __str__(self) -> str:
        return f"{self.source}:{self.query or '*'} [{self.newest_id}..{self.oldest_id}]"

    @property
    def has_block(self) -> bool:
        return self.newest_id is not None and self.oldest_id is not None


class SeenPost(models.Model):
    """The download archive: a post once decided (stored, duplicate, refused) is never fetched again."""

    source = models.CharField(max_length=60)
    post_id = models.CharField(max_length=255)
    md5 = models.CharField(max_length=32, blank=True, db_index=True)
    outcome = models.CharField(max_length=40, help_text="new, exact_duplicate, near_duplicate, or a refusal reason")
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    job = models.ForeignKey(CrawlJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="seen_posts")
    seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "post_id"], name="seen_post_unique")]

    def __str__(self) -> str:
        return f"{self.source}:{self.post_id} ({self.outcome})"
