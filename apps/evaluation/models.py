"""Evaluation runs, their per-character rows, and the tier rules that turn accuracy into collection targets."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.models import Job

# The original report's plan. Seeded into the table by a migration (so the admin can edit it) and used
# as is while the table holds no rule at all.
DEFAULT_TIER_RULES = (
    {"priority": 1, "name": "P1: never recognised", "max_accuracy": 0.0, "inclusive": True, "images": 100},
    {"priority": 2, "name": "P2: below 60%", "max_accuracy": 0.6, "inclusive": False, "images": 80},
    {"priority": 3, "name": "P3: 60-80%", "max_accuracy": 0.8, "inclusive": False, "images": 60},
)


class TierRule(models.Model):
    """A character whose accuracy is below ``max_accuracy`` (or equal, when ``inclusive``) gets this tier.

    Rules are tried by ascending priority and the first that matches wins, so "0% → P1, below 60% → P2,
    below 80% → P3" needs no lower bounds. ``images`` is how many more images the plan asks for.
    """

    priority = models.PositiveSmallIntegerField(unique=True, help_text="1 is the most urgent; tried in this order")
    name = models.CharField(max_length=80)
    max_accuracy = models.FloatField(help_text="Upper bound of accuracy, 0-1")
    inclusive = models.BooleanField(default=False, help_text="Whether accuracy equal to the bound matches")
    images = models.PositiveIntegerField(help_text="More images to collect per character in this tier")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority"]

    def __str__(self) -> str:
        return self.name

    @property
    def condition(self) -> str:
        return f"accuracy {'≤' if self.inclusive else '<'} {self.max_accuracy:.0%}"

    def matches(self, accuracy: float) -> bool:
        return accuracy <= self.max_accuracy if self.inclusive else accuracy < self.max_accuracy


class EvaluationRun(Job):
    """One model version's predictions over one split of one dataset version, on the serving path."""

    class Origin(models.TextChoices):
        TRAINING = "training", "after a training job"
        CLI = "cli"
        API = "api"
        ADMIN = "admin"
        CYCLE = "cycle", "by an improvement cycle"

    model_version = models.ForeignKey("inference.ModelVersion", on_delete=models.CASCADE, related_name="evaluations")
    dataset_version = models.ForeignKey("characters.DatasetVersion", on_delete=models.PROTECT,
                                        related_name="evaluations")
    split = models.CharField(max_length=5, default="test")
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.CLI)
    training_job_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    apply_threshold = models.BooleanField(
        default=False, help_text="Set the model version's open-set threshold from this run even if it has one")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")

    # Headline metrics (0-1)
    images = models.PositiveIntegerField(default=0)
    top1 = models.FloatField(null=True, blank=True)
    top5 = models.FloatField(null=True, blank=True)
    mean_per_class_accuracy = models.FloatField(null=True, blank=True)
    macro_precision = models.FloatField(null=True, blank=True)
    macro_recall = models.FloatField(null=True, blank=True)
    macro_f1 = models.FloatField(null=True, blank=True)
    ece = models.FloatField(null=True, blank=True, help_text="Expected calibration error of the top-1 confidence")
    ece_uncalibrated = models.FloatField(null=True, blank=True,
                                         help_text="ECE of the same answers before the temperature (T = 1)")
    suggested_threshold = models.FloatField(null=True, blank=True, help_text="Open-set threshold chosen on val")

    # Serving speed, measured through the inference app's predictor
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    images_per_second = models.FloatField(null=True, blank=True)
    device = models.CharField(max_length=120, blank=True)
    backend = models.CharField(max_length=30, blank=True)

    # Tables
    labels = models.JSONField(default=list, blank=True, help_text="Class space: the model's labels, then unknown characters")
    confusion_matrix = models.JSONField(default=list, blank=True)
    confused_pairs = models.JSONField(default=list, blank=True)
    reliability = models.JSONField(default=list, blank=True)
    open_set = models.JSONField(default=dict, blank=True, help_text=(
        "Known (classes and gallery) against unseen characters of the split: AUROC of the top-1 confidence and the "
        "unknown rate of each"))
    calibration = models.JSONField(default=dict, blank=True, help_text=(
        "The temperature served and how it was fitted, and the reliability bins before it (reliability_uncalibrated)"))
    threshold = models.JSONField(default=dict, blank=True, help_text="How the suggested threshold was chosen")
    speed = models.JSONField(default=dict, blank=True)
    leak_report = models.JSONField(default=dict, blank=True)
    notes = models.JSONField(default=list, blank=True, help_text="Things a reader must know about this run")
    plan = models.JSONField(default=dict, blank=True, help_text="The collection plan created from this run, if any")
    label_issues = models.JSONField(
        default=list, blank=True,
        help_text="Suspect labels, most suspect first: [{image, label, predicted, probability, self_confidence}]; "
                  "val and test runs only (the model learned the train split's labels)")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model_version", "dataset_version", "split"])]

    def __str__(self) -> str:
        return f"evaluation {self.pk}: {self.model_version} on {self.dataset_version}/{self.split}"

    def lost_message(self) -> str:
        return "lost: the worker running this evaluation died or timed out; run it again"

    @property
    def leaks(self) -> int:
        return int((self.leak_report or {}).get("leaked_images", 0))


# Most urgent first: by (provisional) tier, then lowest accuracy; untiered and unmeasured rows last.
URGENT_FIRST = (models.F("provisional_tier").asc(nulls_last=True), models.F("accuracy").asc(nulls_last=True), "label")


class CharacterResult(models.Model):
    """One character's row in a run. A class of the model the split does not hold has support 0."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="characters")
    character = models.ForeignKey("characters.Character", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="evaluation_results")
    label = models.CharField(max_length=200, help_text="The character's slug (the model's class label)")
    support = models.PositiveIntegerField(default=0)
    predicted = models.PositiveIntegerField(default=0, help_text="Images the model gave this label")
    correct = models.PositiveIntegerField(default=0)
    accuracy = models.FloatField(null=True, blank=True, help_text="Recall: correct / support; empty without support")
    precision = models.FloatField(null=True, blank=True)
    recall = models.FloatField(null=True, blank=True)
    f1 = models.FloatField(null=True, blank=True)
    mistaken_for = models.CharField(max_length=200, blank=True, help_text="Label most often given instead")
    mistaken_count = models.PositiveIntegerField(default=0)
    in_model = models.BooleanField(default=True, help_text="The model has this class")
    source = models.CharField(max_length=10, blank=True, help_text=(
        "Who answers for it: classifier (a class of the model), gallery (its approved images' embeddings), "
        "or empty (nobody: it counts as unknown)"))
    in_split = models.BooleanField(default=True, help_text="The evaluated split holds images of it")
    low_support = models.BooleanField(default=False, help_text="Too few images to tier (KYARA_EVAL_MIN_SUPPORT)")
    tier = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Priority of the matching tier rule")
    tier_name = models.CharField(max_length=80, blank=True)
    provisional_tier = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="What the rules say regardless of support (a low-support row's hint)")
    target = models.PositiveIntegerField(default=0, help_text="More images the (provisional) tier asks for")

    class Meta:
        ordering = ["run", "tier", "accuracy", "label"]
        constraints = [models.UniqueConstraint(fields=["run", "label"], name="evaluation_character_unique")]

    def __str__(self) -> str:
        return f"{self.label} in run {self.run_id}"
