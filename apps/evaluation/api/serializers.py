from __future__ import annotations

from rest_framework import serializers

from apps.characters.models import DatasetItem, DatasetVersion
from apps.crawling.api.serializers import MinConfidenceField
from apps.inference.models import ModelVersion

from ..models import CharacterResult, EvaluationRun, TierRule


class CharacterResultSerializer(serializers.ModelSerializer):
    character = serializers.CharField(source="label")

    class Meta:
        model = CharacterResult
        fields = ["character", "support", "predicted", "correct", "accuracy", "precision", "recall", "f1",
                  "mistaken_for", "mistaken_count", "tier", "tier_name", "provisional_tier", "target", "low_support",
                  "in_model", "in_split"]
        read_only_fields = fields


class LabelIssueSerializer(serializers.Serializer):
    """An approved image whose label its nearest neighbours contradict (``EvaluationRun.label_issues``)."""

    image = serializers.IntegerField()
    label = serializers.CharField(help_text="The character slug the image carries")
    predicted = serializers.CharField(help_text="The character slug most of its neighbours carry")
    probability = serializers.FloatField(help_text="The neighbours' weighted share for the predicted character")
    self_confidence = serializers.FloatField(help_text="The neighbours' weighted share for the given label")


class EvaluationRunSerializer(serializers.ModelSerializer):
    """Leaks come first: when the check found any, the reader sees it before the numbers it inflates."""

    leak_warning = serializers.SerializerMethodField()
    model_version_name = serializers.CharField(source="model_version.name", read_only=True)
    dataset_version_name = serializers.CharField(source="dataset_version.name", read_only=True)

    class Meta:
        model = EvaluationRun
        fields = ["id", "leak_warning", "status", "error", "model_version", "model_version_name", "dataset_version",
                  "dataset_version_name", "split", "origin", "training_job_id", "images", "top1", "top5",
                  "mean_per_class_accuracy", "macro_precision", "macro_recall", "macro_f1", "ece",
                  "ece_uncalibrated", "suggested_threshold", "latency_p50_ms", "latency_p95_ms", "images_per_second", "device", "backend",
                  "notes", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_leak_warning(self, run: EvaluationRun) -> str | None:
        report = run.leak_report or {}
        if not report.get("leaked_images"):
            return None
        return (f"{report['leaked_images']} of {report['checked']} evaluated images also appear in "
                f"{report['reference']} ({report['exact']} exact, {report['near']} near-duplicates, "
                f"{report['same_post']} from the same post); accuracy without them: "
                f"{_percent(report.get('accuracy_without_leaks'))}.")


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


class EvaluationRunDetailSerializer(EvaluationRunSerializer):
    per_character = CharacterResultSerializer(source="characters", many=True, read_only=True)
    label_issues = LabelIssueSerializer(many=True, read_only=True)

    class Meta(EvaluationRunSerializer.Meta):
        fields = ["id", "leak_warning", "leak_report", *EvaluationRunSerializer.Meta.fields[2:], "threshold", "speed",
                  "reliability", "calibration", "open_set", "confused_pairs", "labels", "confusion_matrix", "plan", "label_issues",
                  "per_character"]
        read_only_fields = fields


class EvaluationRunCreateSerializer(serializers.Serializer):
    model_version = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())
    dataset_version = serializers.SlugRelatedField(slug_field="name", queryset=DatasetVersion.objects.all())
    split = serializers.ChoiceField(choices=DatasetItem.Split.choices, default="test")
    apply_threshold = serializers.BooleanField(default=False)


class PlanCreateSerializer(serializers.Serializer):
    sources = serializers.ListField(child=serializers.CharField(), required=False, allow_null=True, default=None)
    include_low_support = serializers.BooleanField(default=False)
    solo = serializers.BooleanField(default=True, help_text="The crawl jobs take only single-character posts")
    auto_approve_min_confidence = MinConfidenceField()


class TierRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = TierRule
        fields = ["id", "priority", "name", "max_accuracy", "inclusive", "images", "active", "condition"]
        read_only_fields = ["condition"]

    def validate_max_accuracy(self, value: float) -> float:
        if not 0 <= value <= 1:
            raise serializers.ValidationError("An accuracy bound is between 0 and 1.")
        return value


def run_summary(run: EvaluationRun) -> dict:
    """The run as one JSON object (``manage.py evaluate --json``): leak check first, then the numbers."""
    data = dict(EvaluationRunDetailSerializer(run).data)
    for key in ("labels", "confusion_matrix"):
        data.pop(key)
    return data
