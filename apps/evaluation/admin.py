from django import forms
from django.contrib import admin, messages

from apps.characters.models import DatasetItem
from apps.core.api import ServiceError

from . import services
from .models import URGENT_FIRST, CharacterResult, EvaluationRun, TierRule


@admin.register(TierRule)
class TierRuleAdmin(admin.ModelAdmin):
    """The collection plan's rules as data: edit a bound or a target here, no deploy needed."""

    list_display = ["priority", "name", "condition", "max_accuracy", "inclusive", "images", "active"]
    list_editable = ["name", "max_accuracy", "inclusive", "images", "active"]
    list_display_links = ["priority"]


class CharacterResultInline(admin.TabularInline):
    model = CharacterResult
    extra = 0
    can_delete = False
    fields = ["label", "support", "correct", "accuracy", "precision", "f1", "mistaken_for", "tier", "target",
              "low_support", "in_model"]
    readonly_fields = fields
    ordering = URGENT_FIRST

    def has_add_permission(self, request, obj=None):
        return False


class EvaluationRunAddForm(forms.ModelForm):
    class Meta:
        model = EvaluationRun
        fields = ["model_version", "dataset_version", "split", "apply_threshold"]
        widgets = {"split": forms.Select(choices=DatasetItem.Split.choices)}

    def clean(self):
        data = super().clean()
        if data.get("dataset_version") is not None:
            try:
                services.evaluation_run_check(dataset_version=data["dataset_version"], split=data.get("split", ""))
            except ServiceError as exc:
                raise forms.ValidationError(exc.message) from None
        return data


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    list_display = ["id", "model_version", "dataset_version", "split", "status", "leaks", "top1",
                    "mean_per_class_accuracy", "macro_f1", "ece", "origin", "created_at"]
    list_filter = ["status", "split", "origin"]
    search_fields = ["model_version__name", "dataset_version__name"]
    actions = ["evaluate_again", "create_collection_plan"]
    inlines = [CharacterResultInline]
    add_form = EvaluationRunAddForm

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": EvaluationRunAddForm.Meta.fields})]
        # The leak check first: numbers measured on leaked images are read with it in mind.
        return [
            ("Leak check", {"fields": ["leak_report"]}),
            ("Run", {"fields": ["model_version", "dataset_version", "split", "status", "error", "origin",
                                "training_job_id", "notes", "started_at", "finished_at"]}),
            ("Metrics", {"fields": ["images", "top1", "top5", "mean_per_class_accuracy", "macro_precision",
                                    "macro_recall", "macro_f1", "ece", "suggested_threshold", "threshold"]}),
            ("Serving speed", {"fields": ["latency_p50_ms", "latency_p95_ms", "images_per_second", "device",
                                          "backend", "speed"]}),
            ("Tables", {"classes": ["collapse"], "fields": ["confused_pairs", "reliability", "plan"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [f.name for f in EvaluationRun._meta.fields]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def save_model(self, request, obj, form, change):
        if change:
            return
        run = services.evaluation_run_create(
            model_version=obj.model_version, dataset_version=obj.dataset_version, split=obj.split,
            apply_threshold=obj.apply_threshold, origin=EvaluationRun.Origin.ADMIN, requested_by=request.user)
        obj.pk = run.pk
        obj._state.adding = False

    @admin.action(description="Evaluate again (a new run of the same model, dataset version and split)")
    def evaluate_again(self, request, queryset):
        done = 0
        for run in queryset.select_related("model_version", "dataset_version"):
            try:
                services.evaluation_run_create(model_version=run.model_version, dataset_version=run.dataset_version,
                                               split=run.split, origin=EvaluationRun.Origin.ADMIN,
                                               requested_by=request.user)
                done += 1
            except ServiceError as exc:
                self.message_user(request, f"Run {run.pk}: {exc.message}", level=messages.WARNING)
        if done:
            self.message_user(request, f"{done} evaluation(s) queued.")

    @admin.action(description="Create the collection plan's crawl jobs")
    def create_collection_plan(self, request, queryset):
        for run in queryset:
            try:
                jobs = services.evaluation_plan_create(run=run, requested_by=request.user)
            except ServiceError as exc:
                self.message_user(request, f"Run {run.pk}: {exc.message}", level=messages.WARNING)
                continue
            self.message_user(request, f"Run {run.pk}: {len(jobs)} crawl job(s) created.")
