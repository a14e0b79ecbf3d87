"""Series, characters, images (content-addressed), their audit trail, and frozen dataset versions."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.models import Job, TimeStampedModel

from .phash import BAND_COUNT


class Series(TimeStampedModel):
    slug = models.SlugField(max_length=120, unique=True, allow_unicode=True)
    name = models.CharField(max_length=200)
    aliases = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["slug"]
        verbose_name_plural = "series"

    def __str__(self) -> str:
        return self.name


class Character(TimeStampedModel):
    series = models.ForeignKey(Series, on_delete=models.PROTECT, related_name="characters")
    # Globally unique: it is the class label a model predicts and the API returns.
    slug = models.SlugField(max_length=200, unique=True, allow_unicode=True)
    name = models.CharField("display name", max_length=200)
    aliases = models.JSONField(default=list, blank=True)
    # Booru tags per site family, e.g. {"danbooru": "hu_tao_(genshin_impact)", "gelbooru": "..."}.
    booru_tags = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=True)
    target_image_count = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["series__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["series", "name"], name="character_unique_name_in_series")]

    def __str__(self) -> str:
        return f"{self.name} ({self.series.slug})"

    @property
    def folder_name(self) -> str:
        """The original layout's class folder: ``<series>_<character>``."""
        return f"{self.series.slug}_{self.name}".replace("/", "∕")


class Image(TimeStampedModel):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    class SourceKind(models.TextChoices):
        IMPORT = "import"
        UPLOAD = "upload"
        CRAWL = "crawl"

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(max_length=255)
    thumbnail = models.CharField(max_length=255, blank=True)
    format = models.CharField(max_length=10)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bytes = models.PositiveBigIntegerField()
    # 64-bit perceptual hash stored as a signed integer, plus its bands for the indexed lookup.
    phash = models.BigIntegerField()
    phash_b0 = models.IntegerField(db_index=True)
    phash_b1 = models.IntegerField(db_index=True)
    phash_b2 = models.IntegerField(db_index=True)
    phash_b3 = models.IntegerField(db_index=True)
    # Id of the first image of its near-duplicate group (its own id when alone).
    dup_group = models.BigIntegerField(null=True, blank=True, db_index=True)

    character = models.ForeignKey(
        Character, null=True, blank=True, on_delete=models.PROTECT, related_name="images"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    reason = models.CharField(max_length=40, blank=True, help_text="Reason code of a rejection")

    source_kind = models.CharField(max_length=10, choices=SourceKind.choices, db_index=True)
    source_site = models.CharField(max_length=60, blank=True, db_index=True)
    source_url = models.URLField(max_length=1000, blank=True)
    source_post_id = models.CharField(max_length=100, blank=True)
    source_tags = models.JSONField(default=list, blank=True)
    original_name = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["character", "status"]),
            models.Index(fields=["source_site", "source_post_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.character or 'unlabelled'})"

    @property
    def group_key(self) -> int:
        return self.dup_group or self.pk


assert BAND_COUNT == 4, "Image has one indexed column per pHash band"


class ImageEvent(models.Model):
    """Audit trail: every label or status change, who made it and when."""

    class Kind(models.TextChoices):
        LABEL = "label"
        STATUS = "status"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    from_value = models.CharField(max_length=200, blank=True)
    to_value = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.from_value or '∅'} → {self.to_value or '∅'}"


class DatasetVersion(TimeStampedModel):
    """An immutable frozen manifest of (image, character, split)."""

    name = models.CharField(max_length=120, unique=True)
    content_hash = models.CharField(max_length=64, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    notes = models.TextField(blank=True)
    params = models.JSONField(default=dict, help_text="val, test, seed, min_images used by the freeze")
    counts = models.JSONField(default=dict, help_text="images per split and per character")
    excluded = models.JSONField(default=dict, blank=True, help_text="characters left out and why")
    leak_report = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def num_images(self) -> int:
        return sum(self.counts.get("splits", {}).values())


class DatasetItem(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train"
        VAL = "val"
        TEST = "test"

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="dataset_items")
    character = models.ForeignKey(Character, on_delete=models.PROTECT, related_name="dataset_items")
    split = models.CharField(max_length=5, choices=Split.choices, db_index=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["version", "image"], name="dataset_item_unique_image")]
        indexes = [models.Index(fields=["version", "split"])]

    def __str__(self) -> str:
        return f"{self.version_id}:{self.image_id}:{self.split}"


class ImportJob(Job):
    """A zip of ``<series>_<character>/`` folders uploaded from the browser, imported by the import service.

    The upload is kept under ``KYARA_IMPORTS_DIR`` until the import succeeds (a failed or lost one keeps it,
    so it can be imported again; a second import adds only what the first did not)."""

    class ImageStatus(models.TextChoices):
        APPROVED = "approved", "approved (a curated dataset)"
        PENDING = "pending", "pending (review them first)"

    archive = models.CharField(max_length=500, help_text="Where the uploaded zip waits to be imported")
    original_name = models.CharField(max_length=255)
    size_bytes = models.PositiveBigIntegerField()
    files = models.PositiveIntegerField(help_text="Files in the archive's <series>_<character>/ folders")
    image_status = models.CharField(max_length=10, choices=ImageStatus.choices, default=ImageStatus.APPROVED)
    summary = models.JSONField(default=dict, blank=True, help_text="The import service's summary")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"import {self.pk} ({self.original_name})"

    def lost_message(self) -> str:
        return ("The worker stopped while importing this zip; retry it (what was imported stays, a second import "
                "adds only the rest).")
