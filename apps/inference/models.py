"""The model registry: versions with their artifacts, aliases that point at them, and alias history."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.models import TimeStampedModel


class ModelVersion(TimeStampedModel):
    """A trained model ready to serve. The artifact is a ``torch.save``d dict (see apps.ml)."""

    name = models.CharField(max_length=120, unique=True)
    architecture = models.CharField(max_length=60)
    # Class labels in output order: character slugs.
    labels = models.JSONField(default=list)
    input_size = models.PositiveIntegerField(default=224)
    normalization = models.JSONField(default=dict, help_text='{"mean": [...], "std": [...]}')
    artifact = models.CharField(max_length=500, help_text="Path relative to KYARA_DATA_DIR/artifacts")
    artifact_sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField(default=0)
    parameters = models.PositiveBigIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    dataset_version = models.ForeignKey(
        "characters.DatasetVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="model_versions"
    )
    # Set by the training app; a plain id because inference sits below training in the import order.
    training_job_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    # Open-set answer: below this top-1 probability the prediction says "unknown" (evaluation suggests one).
    confidence_threshold = models.FloatField(null=True, blank=True)
    # The temperature its probabilities are divided by, and the evidence: {"temperature", "split", "images",
    # "nll_before", "nll_after", "ece_before", "ece_after", "fitted_by", ...} (apps.ml.calibration). Empty: the
    # artifact's own (1.0 for an artifact made before calibration existed).
    calibration = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    # Which runtime serves this version on each kind of machine, and the evidence: machine fingerprint key →
    # {"chosen", "why", "machine", "measured_at", "candidates": [{name, status, reason, ms_b1, ms_b10,
    # agreement, accuracy_delta_points...}], ...} (apps.ml.runtime_choice). Measured once per kind of machine
    # (at registration, by a worker, or at the first load there); every process then loads the chosen one.
    runtime_choices = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def temperature(self) -> float | None:
        """The registry's temperature, ``None`` when it has none (the artifact's own then serves)."""
        value = (self.calibration or {}).get("temperature")
        return float(value) if value else None

    @property
    def artifact_path(self):
        return settings.ARTIFACTS_DIR / self.artifact


class ModelAvailability(models.Model):
    """Whether a version's artifact could be loaded, and why not: written by the predictor cache."""

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="availability")
    available = models.BooleanField(default=True)
    reason = models.TextField(blank=True)
    backend = models.CharField(max_length=30, blank=True)
    checked_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "model availability"

    def __str__(self) -> str:
        return f"{self.version}: {'available' if self.available else 'unavailable'}"


class ModelAlias(models.Model):
    """A name clients ask for (``default``, ``mobilenet_v2``, ``candidate``...) pointing at one version."""

    name = models.SlugField(max_length=60, unique=True)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.name} → {self.version}"


class AliasChange(models.Model):
    """One move of an alias: who, when, from which version to which, and why. Rollbacks are changes too."""

    class Kind(models.TextChoices):
        SET = "set"
        ROLLBACK = "rollback"

    alias = models.CharField(max_length=60, db_index=True)
    from_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    to_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.SET)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    why = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.alias}: {self.from_version or '∅'} → {self.to_version} ({self.kind})"


class ImageEmbedding(models.Model):
    """One image's embedding by one model version: the L2-normalised pooled features its serving graph returns
    with the logits (apps.ml.heads), stored as float16. Written by the suggestion task (the same forward) and by
    the gallery refresh for approved images that have none; read by the gallery and the suspect-label search."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey("characters.Image", on_delete=models.CASCADE, related_name="embeddings")
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "image"], name="one_embedding_per_version_image")]

    def __str__(self) -> str:
        return f"{self.image_id} by {self.version_id}"


class Gallery(models.Model):
    """What a model version answers from embeddings: the prototype (normalised mean embedding) of every character
    with approved images, classes of the model and others alike; the others are its gallery characters. Rebuilt
    by a worker (``apps.inference.tasks.gallery_refresh``) when curation changes; every serving process reloads
    it when ``generation`` moves."""

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="gallery", primary_key=True)
    labels = models.JSONField(default=list, help_text="Character slugs, in the prototypes' row order")
    counts = models.JSONField(default=list, help_text="Approved images per prototype")
    prototypes = models.BinaryField(default=bytes, help_text="len(labels) × dim float16")
    dim = models.PositiveIntegerField(default=0)
    mean = models.BinaryField(default=bytes, help_text="dim float32: the centre embeddings are taken from")
    fingerprint = models.CharField(max_length=120, blank=True, help_text="The curation state it was built from")
    generation = models.PositiveIntegerField(default=0)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(default=0.0)

    class Meta:
        verbose_name_plural = "galleries"

    def __str__(self) -> str:
        return f"gallery of {self.version_id} ({len(self.labels)} characters, generation {self.generation})"
