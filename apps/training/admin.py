from django.contrib import admin, messages

from apps.core.api import ServiceError

from . import services
from .models import TrainingEpoch, TrainingJob


class TrainingEpochInline(admin.TabularInline):
    model = TrainingEpoch
    extra = 0
    can_delete = False
    fields = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


def _apply(modeladmin, request, queryset, operation, verb):
    done = 0
    for job in queryset:
        try:
            operation(job=job)
            done += 1
        except ServiceError as exc:
            modeladmin.message_user(request, f"Job {job.pk}: {exc.message}", level=messages.WARNING)
    if done:
        modeladmin.message_user(request, f"{done} job(s) {verb}.")


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "dataset_version", "status", "progress", "epochs_run", "best_val_accuracy",
                    "stop_reason", "device", "model_version", "created_at"]
    list_filter = ["status", "stop_reason", "device"]
    search_fields = ["name", "dataset_version__name"]
    inlines = [TrainingEpochInline]
    actions = ["cancel_jobs", "resume_jobs"]
    readonly_fields = [f.name for f in TrainingJob._meta.fields if f.name not in ("name",)]

    def has_add_permission(self, request):
        return False  # jobs start through the service (API, command), which validates the config

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        _apply(self, request, queryset, services.training_job_cancel, "cancelled or asked to stop")

    @admin.action(description="Resume selected jobs from their last checkpoint")
    def resume_jobs(self, request, queryset):
        _apply(self, request, queryset, services.training_job_resume, "queued to resume")
