from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from ..loading import machine_key, predictor_cache
from ..models import AliasChange, ModelAlias, ModelVersion
from ..selectors import metrics_summary


class ModelVersionSerializer(serializers.ModelSerializer):
    aliases = serializers.SerializerMethodField()
    metrics = serializers.SerializerMethodField()
    available = serializers.SerializerMethodField()
    unavailable_reason = serializers.SerializerMethodField()
    loaded = serializers.SerializerMethodField()
    runtime = serializers.SerializerMethodField()
    calibration = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["id", "name", "architecture", "labels", "input_size", "normalization", "parameters", "size_bytes",
                  "artifact_sha256", "confidence_threshold", "calibration", "metrics", "aliases", "available", "unavailable_reason",
                  "loaded", "runtime", "dataset_version", "training_job_id", "notes", "created_at"]

    @extend_schema_field(serializers.DictField(help_text=(
        "How its probabilities are calibrated: temperature, split, images, ECE and NLL before and after, who fitted "
        "it; gallery: the prototype scale, background and stranger limit (the centre vector is left out)")))
    def get_calibration(self, obj) -> dict:
        calibration = dict(obj.calibration or {})
        if isinstance(calibration.get("gallery"), dict):
            calibration["gallery"] = {k: v for k, v in calibration["gallery"].items() if k != "mean"}
        return calibration

    def get_aliases(self, obj) -> list[str]:
        return sorted(alias.name for alias in obj.aliases.all())

    def get_metrics(self, obj) -> dict:
        return metrics_summary(obj.metrics)

    def get_available(self, obj) -> bool | None:
        availability = getattr(obj, "availability", None)
        return None if availability is None else availability.available  # None: never loaded yet

    def get_unavailable_reason(self, obj) -> str:
        availability = getattr(obj, "availability", None)
        return "" if availability is None or availability.available else availability.reason

    def get_loaded(self, obj) -> bool:
        return predictor_cache.peek(obj) is not None

    @extend_schema_field(inline_serializer("ModelRuntime", {
        "machine": serializers.CharField(help_text="this server's machine key"),
        "chosen": serializers.CharField(allow_null=True, help_text="the runtime chosen here (null: not measured yet)"),
        "choices": serializers.DictField(child=serializers.DictField(), help_text=(
            "machine key → the choice and its evidence: candidates with status, reason, forward ms at batch 1 "
            "and 10, top-1 agreement with eager fp32 and accuracy delta on the version's validation images")),
    }))
    def get_runtime(self, obj) -> dict:
        key = self.context.setdefault("machine_key", machine_key()[0])
        choices = obj.runtime_choices or {}
        return {"machine": key, "chosen": (choices.get(key) or {}).get("chosen"), "choices": choices}


class ModelAliasSerializer(serializers.ModelSerializer):
    version = serializers.CharField(source="version.name")
    updated_by = serializers.CharField(source="updated_by.username", default=None, allow_null=True)

    class Meta:
        model = ModelAlias
        fields = ["name", "version", "updated_at", "updated_by"]


class AliasChangeSerializer(serializers.ModelSerializer):
    from_version = serializers.CharField(source="from_version.name", default=None, allow_null=True)
    to_version = serializers.CharField(source="to_version.name")
    actor = serializers.CharField(source="actor.username", default=None, allow_null=True)

    class Meta:
        model = AliasChange
        fields = ["id", "alias", "kind", "from_version", "to_version", "actor", "why", "at"]


class AliasSetSerializer(serializers.Serializer):
    version = serializers.CharField(help_text="A model version name (or another alias)")
    why = serializers.CharField(required=False, allow_blank=True, default="")
    force = serializers.BooleanField(required=False, default=False, help_text="Override the promotion gate")


class PromoteSerializer(serializers.Serializer):
    alias = serializers.CharField(required=False, default="default")
    why = serializers.CharField(required=False, allow_blank=True, default="")
    force = serializers.BooleanField(required=False, default=False)


class RollbackSerializer(serializers.Serializer):
    why = serializers.CharField(required=False, allow_blank=True, default="")


class PredictRequestSerializer(serializers.Serializer):
    file = serializers.FileField()
    model = serializers.CharField(required=False, help_text="Alias or version; default 'default'")
    top_k = serializers.IntegerField(required=False, default=5)


class PredictBatchRequestSerializer(serializers.Serializer):
    files = serializers.ListField(child=serializers.FileField())
    model = serializers.CharField(required=False)
    top_k = serializers.IntegerField(required=False, default=5)
