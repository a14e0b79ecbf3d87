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
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def artifact_path(self):
        return settings.ARTIFACTS_DIR / self.artifact
