from rest_framework import serializers

from apps.characters.models import Character

from ..models import CrawlJob
from ..services import MAX_QUOTA


class CrawlJobSerializer(serializers.ModelSerializer):
    character = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    last_error = serializers.CharField(source="error", read_only=True,
                                       help_text="The same as error (its name before every job shared one lifecycle)")

    class Meta:
        model = CrawlJob
        fields = ["id", "source", "query", "character", "quota", "approve", "solo", "auto_approve_min_confidence",
                  "max_pages", "threads", "origin", "evaluation_run_id", "steps", "requested_by", "status", "stop_reason", "progress", "cancel_requested", "pages", "listed",
                  "skipped_known", "downloaded", "accepted", "exact_duplicates", "near_duplicates", "too_small",
                  "refused", "errors", "refused_by_reason", "errors_by_kind", "ingest_seconds", "error", "last_error",
                  "attempts", "created_at", "started_at", "heartbeat_at", "finished_at"]
        read_only_fields = fields


class MinConfidenceField(serializers.FloatField):
    """The auto-review threshold, optional; its bounds (0 < p ≤ 1) are the service's to check, with one message
    for every way in (API, admin, commands)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("help_text", "Auto-review: approve new images whose claimed label the model confirms at or "
                          "above this probability (0 < p ≤ 1); null: off")
        super().__init__(required=False, allow_null=True, default=None, **kwargs)


class CrawlJobCreateSerializer(serializers.Serializer):
    source = serializers.CharField(max_length=60)
    character = serializers.SlugRelatedField(slug_field="slug", queryset=Character.objects.all(), required=False,
                                             allow_null=True, help_text="Omit or null for the unlabelled pool")
    query = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    quota = serializers.IntegerField(min_value=1, max_value=MAX_QUOTA)
    approve = serializers.BooleanField(required=False, default=False)
    solo = serializers.BooleanField(required=False, allow_null=True, default=None,
                                    help_text="Only single-character posts (boorus: tagged solo); null: the source's "
                                    "default")
    auto_approve_min_confidence = MinConfidenceField()
    max_pages = serializers.IntegerField(min_value=1, max_value=10_000, required=False, allow_null=True)
    threads = serializers.IntegerField(min_value=1, max_value=32, required=False, allow_null=True)


class PlanTargetSerializer(serializers.Serializer):
    character = serializers.SlugRelatedField(slug_field="slug", queryset=Character.objects.all())
    wanted = serializers.IntegerField(min_value=1, max_value=MAX_QUOTA)


class CollectionPlanSerializer(serializers.Serializer):
    targets = PlanTargetSerializer(many=True, allow_empty=False)
    sources = serializers.ListField(child=serializers.CharField(max_length=60), required=False, allow_null=True)
    solo = serializers.BooleanField(required=False, default=True,
                                    help_text="Only single-character posts (default: yes, the model is single-label)")
    auto_approve_min_confidence = MinConfidenceField()


class SourceSerializer(serializers.Serializer):
    name = serializers.CharField()
    origin = serializers.CharField()
    error = serializers.CharField()
    root = serializers.CharField(required=False)
    description = serializers.CharField(required=False)
    labelled = serializers.BooleanField(required=False)
    tag_family = serializers.CharField(required=False)
    listing = serializers.CharField(required=False)
    politeness = serializers.DictField(required=False)
    settings_schema = serializers.DictField(required=False)
    steps = serializers.ListField(child=serializers.CharField(), required=False)
    solo_tag = serializers.CharField(required=False)
    solo_default = serializers.BooleanField(required=False)
