from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.evaluation.models import EvaluationRun

from ..models import Cycle, Stage, StageStatus
from ..selectors import stages_with_urls, waiting_images
from ..stages import EVALUATIONS


class StageLinkSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="crawl_job, training_job, evaluation, dataset_version, model_version, review")
    id = serializers.IntegerField(allow_null=True)
    label = serializers.CharField()
    url = serializers.CharField(allow_null=True, help_text="Its page (or API resource); null where it has none")


class StageSerializer(serializers.Serializer):
    """One stage's record (``Cycle.stages``)."""

    name = serializers.ChoiceField(choices=Stage.choices)
    label = serializers.CharField()
    status = serializers.ChoiceField(choices=StageStatus.choices)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    detail = serializers.CharField(allow_blank=True)
    links = StageLinkSerializer(many=True)


class CycleSerializer(serializers.ModelSerializer):
    """A cycle with its stages (status, timings, detail, links with their URLs) and everything it made; the
    shape ``manage.py improve --json`` prints too."""

    stages = serializers.SerializerMethodField()
    crawl_jobs = serializers.SerializerMethodField()
    model_version = serializers.IntegerField(source="training_job.model_version_id", default=None, read_only=True,
                                             allow_null=True, help_text="The new model (the training job's)")
    evaluations = serializers.SerializerMethodField()
    waiting_images = serializers.SerializerMethodField(
        help_text="Images from this cycle's crawls still pending (at the review and wait stages; else null)")

    class Meta:
        model = Cycle
        fields = ["id", "status", "stage", "progress", "cancel_requested", "error", "from_evaluation", "characters",
                  "sources", "auto_approve_min_confidence", "epochs", "image_size", "config_overrides",
                  "promote_if_better", "margin", "skip_waiting", "origin", "stages", "plan", "crawl_jobs",
                  "waiting_images", "dataset_version", "training_job", "model_version", "baseline_model",
                  "evaluation", "evaluations", "comparison", "promoted", "hold_reason", "created_at", "started_at",
                  "finished_at", "heartbeat_at"]
        read_only_fields = fields

    @extend_schema_field(StageSerializer(many=True))
    def get_stages(self, cycle: Cycle) -> list[dict]:
        return stages_with_urls(cycle)

    def get_crawl_jobs(self, cycle: Cycle) -> list[int]:
        return sorted(job.pk for job in cycle.crawl_jobs.all())

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_evaluations(self, cycle: Cycle) -> dict:
        """The runs compared: the new model and default, each on the new and the previous test split."""
        return {name: getattr(cycle, f"{name}_id") for name in EVALUATIONS}

    def get_waiting_images(self, cycle: Cycle) -> int | None:
        return waiting_images(cycle)


class CycleCreateSerializer(serializers.Serializer):
    from_evaluation = serializers.PrimaryKeyRelatedField(queryset=EvaluationRun.objects.all(),
                                                         help_text="The evaluation whose tiers are the plan")
    characters = serializers.ListField(child=serializers.CharField(max_length=200), required=False, default=list,
                                       help_text="Character slugs; empty: every character of the plan")
    sources = serializers.ListField(child=serializers.CharField(max_length=60), required=False, default=list)
    auto_approve_min_confidence = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True,
                                                         default=None)
    epochs = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    image_size = serializers.IntegerField(min_value=16, max_value=1024, required=False, allow_null=True,
                                          default=None)
    config_overrides = serializers.DictField(required=False, default=dict,
                                             help_text="Training settings over default's (apps.ml.config.TrainConfig)")
    promote_if_better = serializers.BooleanField(required=False, default=False)
    margin = serializers.FloatField(min_value=-1, max_value=1, required=False, allow_null=True, default=None)
    skip_waiting = serializers.BooleanField(required=False, default=False)
