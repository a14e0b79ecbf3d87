from __future__ import annotations

from rest_framework import serializers

from apps.characters.models import DatasetVersion

from ..models import TrainingEpoch, TrainingJob


class TrainingEpochSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingEpoch
        fields = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                  "images_per_second", "timing"]


class TrainingJobSerializer(serializers.ModelSerializer):
    dataset_version_name = serializers.CharField(source="dataset_version.name", read_only=True)
    model_version_name = serializers.CharField(source="model_version.name", read_only=True, default=None, allow_null=True)

    class Meta:
        model = TrainingJob
        fields = ["id", "name", "dataset_version", "dataset_version_name", "config", "status", "cancel_requested",
                  "weights_used", "weights_reason", "recipe", "device", "precision", "world_size", "progress", "epochs_run", "best_epoch", "best_val_accuracy",
                  "best_val_loss", "test_accuracy", "stop_reason", "artifact", "size_bytes", "parameters",
                  "duration_seconds", "model_version", "model_version_name", "error", "attempts", "created_at",
                  "started_at", "finished_at", "heartbeat_at"]
        read_only_fields = fields


class StaffOnlyCharField(serializers.CharField):
    """Shown to staff; ``null`` to everyone else (a log tail and server paths are not public)."""

    def __init__(self, **kwargs):
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def get_attribute(self, instance):
        request = self.context.get("request")
        user = getattr(request, "user", None)
        return super().get_attribute(instance) if user is not None and user.is_staff else None


class TrainingJobDetailSerializer(TrainingJobSerializer):
    epochs = TrainingEpochSerializer(many=True, read_only=True)
    traceback = StaffOnlyCharField(help_text="The last 8 KB of the log when the job failed (staff only)")
    log_path = StaffOnlyCharField(help_text="Staff only")
    run_dir = StaffOnlyCharField(help_text="Staff only")

    class Meta(TrainingJobSerializer.Meta):
        fields = [*TrainingJobSerializer.Meta.fields, "traceback", "summary", "log_path", "run_dir", "epochs"]
        read_only_fields = fields


class TrainingJobCreateSerializer(serializers.Serializer):
    dataset_version = serializers.PrimaryKeyRelatedField(queryset=DatasetVersion.objects.all())
    name = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    config = serializers.DictField(required=False, default=dict)


def job_summary(job: TrainingJob) -> dict:
    """The finished job as one flat object (``manage.py train --json``)."""
    data = dict(TrainingJobSerializer(job).data)
    data["model_version"] = job.model_version.name if job.model_version_id else None
    data["model_version_id"] = job.model_version_id
    return data
