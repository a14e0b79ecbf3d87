"""An improvement cycle: one evaluation's weak characters turned into a new model, and maybe a new default."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.models import Job


def default_margin() -> float:
    return settings.KYARA_CYCLE_PROMOTE_MARGIN


class Stage(models.TextChoices):
    """The steps of a cycle, in order; ``apps.improvement.stages`` runs each."""

    PLAN = "plan", "plan the collection"
    CRAWL = "crawl", "crawl, tier by tier"
    REVIEW = "review", "auto-review"
    WAIT = "wait", "wait for a person"
    FREEZE = "freeze", "freeze a dataset version"
    TRAIN = "train"
    EVALUATE = "evaluate"
    COMPARE = "compare", "compare with default"
    PROMOTE = "promote"


class StageStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"  # started; waits for its jobs (crawls, training, evaluations)
    WAITING = "waiting"  # waits for a person (images to review)
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Cycle(Job):
    """plan → crawl (tier P1, then P2, P3) → auto-review → wait for a person → freeze → train → evaluate →
    compare → promote (or hold as ``candidate`` with the reason).

    A cycle has no process of its own: short ``advance_cycle`` tasks run whatever step can run and return,
    so it never holds a worker while its crawls or its training run. ``stages`` keeps each step's status,
    timings, detail and links; every id a step made is kept on the row, so a failed or cancelled cycle
    resumes from the step that had not finished and loses nothing done before.
    """

    LOST_REASON = "lost"
    Stage = Stage
    StageStatus = StageStatus

    class Origin(models.TextChoices):
        CLI = "cli", "manage.py improve"
        API = "api", "the API"
        PAGE = "page", "the cycles page"
        SCHEDULE = "schedule", "the weekly schedule"

    # What to do
    from_evaluation = models.ForeignKey("evaluation.EvaluationRun", on_delete=models.PROTECT, related_name="cycles",
                                        help_text="The evaluation whose tiers become the collection plan")
    characters = models.JSONField(default=list, blank=True, help_text="Slugs to collect for; empty: the whole plan")
    sources = models.JSONField(default=list, blank=True, help_text="Source names; empty: KYARA_CRAWL_PLAN_SOURCES")
    auto_approve_min_confidence = models.FloatField(
        null=True, blank=True, help_text="Crawled images whose label the model confirms at least this sure are "
                                         "approved without a person; empty: a person reviews every image")
    epochs = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: as default's training job")
    image_size = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: as default's training job")
    config_overrides = models.JSONField(default=dict, blank=True,
                                        help_text="Training settings over default's (recipe, architecture, ...)")
    promote_if_better = models.BooleanField(default=False, help_text="Point default at the new model if it is better")
    margin = models.FloatField(default=default_margin,
                               help_text="Top-1 the new model must gain over default on every compared split")
    skip_waiting = models.BooleanField(default=False, help_text="Go on without waiting for the review of pending images")
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.API)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")

    # Where it is
    stage = models.CharField(max_length=10, choices=Stage.choices, default=Stage.PLAN, db_index=True)
    stages = models.JSONField(default=list, blank=True,
                              help_text="[{name, status, started_at, finished_at, detail, links}] in order")
    lease_until = models.DateTimeField(null=True, blank=True,
                                       help_text="A step is running until then; other advances leave it alone")

    # What it made
    plan = models.JSONField(default=dict, blank=True, help_text="Tiers with their targets and crawl jobs")
    crawl_jobs = models.ManyToManyField("crawling.CrawlJob", blank=True, related_name="cycles")
    dataset_version = models.ForeignKey("characters.DatasetVersion", null=True, blank=True,
                                        on_delete=models.PROTECT, related_name="cycles")
    training_job = models.ForeignKey("training.TrainingJob", null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="cycles")
    baseline_model = models.ForeignKey("inference.ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="+", help_text="What default pointed at when the cycle compared")
    evaluation = models.ForeignKey("evaluation.EvaluationRun", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", help_text="The new model on the new version's test split")
    evaluation_previous = models.ForeignKey(
        "evaluation.EvaluationRun", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The new model on the previous version's test split")
    baseline_evaluation = models.ForeignKey(
        "evaluation.EvaluationRun", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Default on the new version's test split")
    baseline_evaluation_previous = models.ForeignKey(
        "evaluation.EvaluationRun", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Default on the previous version's test split")
    comparison = models.JSONField(default=dict, blank=True)
    promoted = models.BooleanField(default=False)
    hold_reason = models.TextField(blank=True, help_text="Why the new model was not made default")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"cycle {self.pk} ({self.stage}, {self.status})"

    def lost_message(self) -> str:
        return ("lost: nothing advanced this cycle for a while (is the default qcluster running, with its "
                "'cycles: advance' schedule?); resume it to go on from its current stage.")

    @property
    def previous_version_id(self) -> int | None:
        """The dataset version the cycle starts from: the one its evaluation measured."""
        return self.from_evaluation.dataset_version_id if self.from_evaluation_id else None

    def stage_record(self, name: str) -> dict | None:
        return next((record for record in self.stages if record.get("name") == name), None)
