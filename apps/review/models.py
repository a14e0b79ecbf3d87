"""The model's word on each image awaiting review, and the batches of decisions people (or the policy) made."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class Suggestion(models.Model):
    """One model version's top answers for one image, judged against the label the image had then.

    Recomputed (same row) when asked again; the image's label may change in between, which is why the
    label judged is kept (``claimed_slug``): a reader compares it with the image's label now.
    """

    image = models.ForeignKey("characters.Image", on_delete=models.CASCADE, related_name="suggestions")
    model_version = models.ForeignKey("inference.ModelVersion", on_delete=models.CASCADE, related_name="+")
    top = models.JSONField(default=list, help_text='Top-3: [{"slug", "probability"}], most probable first')
    claimed_slug = models.CharField(max_length=200, blank=True,
                                    help_text="The image's label when computed (empty: unlabelled)")
    claimed_probability = models.FloatField(
        null=True, blank=True, help_text="The model's probability of the claimed label; empty when unlabelled or "
        "the model has no class for it")
    agrees = models.BooleanField(null=True, help_text="Top-1 is the claimed label; empty when the model cannot judge")
    flagged = models.BooleanField(default=False, help_text="The model contradicts the label with high confidence")
    doubt = models.FloatField(help_text="Sort key of the review queue, largest first (apps/review/verdict.py)")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When this verdict was computed")

    class Meta:
        ordering = ["-doubt", "id"]
        constraints = [models.UniqueConstraint(fields=["image", "model_version"], name="review_suggestion_unique")]
        indexes = [models.Index(fields=["model_version", "doubt"], name="review_suggestion_doubt")]

    def __str__(self) -> str:
        best = self.top[0]["slug"] if self.top else "?"
        return f"image {self.image_id}: {best} ({self.model_version_id})"


class ReviewBatch(models.Model):
    """Decisions applied together (one request of a reviewer, one bulk approval, one auto-review pass): what
    undo reverts as a whole. Each image's decision is a ``ReviewDecision``; the ImageEvents the batch
    recorded are listed (``events``)."""

    class Kind(models.TextChoices):
        DECIDE = "decide", "decisions of a reviewer"
        APPROVE_AGREEING = "approve_agreeing", "approve what the model agrees with"
        AUTO_APPROVE = "auto_approve", "the auto-review policy"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    model_version = models.ForeignKey("inference.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+", help_text="Whose word the approvals took (bulk and auto)")
    events = models.JSONField(default=list, help_text="Ids of the ImageEvents the batch recorded")
    counts = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["actor", "undone_at"], name="review_batch_actor")]
        verbose_name_plural = "review batches"

    def __str__(self) -> str:
        return f"review batch {self.pk} ({self.kind})"


class ReviewDecision(models.Model):
    """One image's decision in a batch, with the image's state before and after it: undo restores
    ``before`` and refuses when the image is no longer as ``after`` says (someone changed it since)."""

    batch = models.ForeignKey(ReviewBatch, on_delete=models.CASCADE, related_name="decisions")
    image = models.ForeignKey("characters.Image", on_delete=models.CASCADE, related_name="review_decisions")
    action = models.CharField(max_length=10, help_text="approve, reject or relabel")
    character = models.CharField(max_length=200, blank=True, help_text="relabel: the character's slug")
    reason = models.CharField(max_length=200, blank=True, help_text="reject: the reason code; else a note")
    before = models.JSONField(help_text='{"status", "reason", "character"} (character: id or null)')
    after = models.JSONField(help_text="The same, as the batch left it")

    class Meta:
        ordering = ["batch", "id"]

    def __str__(self) -> str:
        return f"{self.action} image {self.image_id} (batch {self.batch_id})"
