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
        fields = ["id", "source", "query", "character", "quota", "approve", "max_pages", "threads", "origin",
                  "requested_by", "status", "stop_reason", "progress", "cancel_requested", "pages", "listed",
                  "skipped_known", "downloaded", "accepted", "exact_duplicates", "near_duplicates", "too_small",
                  "refused", "errors", "refused_by_reason", "errors_by_kind", "ingest_seconds", "error", "last_error",
                  "attempts", "created_at", "started_at", "heartbeat_at", "finished_at"]
        read_only_fields = fields


class CrawlJobCreateSerializer(serializers.Serializer):
    source = serializers.CharField(max_length=60)
    character = serializers.SlugRelatedField(slug_field="slug", queryset=Character.objects.all(), required=False,
                                             allow_null=True, help_text="Omit or null for the unlabelled pool")
    query = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    quota = serializers.IntegerField(min_value=1, max_value=MAX_QUOTA)
    approve = serializers.BooleanField(required=False, default=False)
    max_pages = serializers.IntegerField(min_value=1, max_value=10_000, required=False, allow_null=True)
    threads = serializers.IntegerField(min_value=1, max_value=32, required=False, allow_null=True)


class PlanTargetSerializer(serializers.Serializer):
    character = serializers.SlugRelatedField(slug_field="slug", queryset=Character.objects.all())
    wanted = serializers.IntegerField(min_value=1, max_value=MAX_QUOTA)


class CollectionPlanSerializer(serializers.Serializer):
    targets = PlanTargetSerializer(many=True, allow_empty=False)
    sources = serializers.ListField(child=serializers.CharField(max_length=60), required=False, allow_null=True)


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
