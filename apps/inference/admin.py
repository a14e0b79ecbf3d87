from django import forms
from django.contrib import admin, messages

from apps.core.api import ServiceError

from . import services
from .models import AliasChange, ModelAlias, ModelAvailability, ModelVersion


class AvailabilityInline(admin.StackedInline):
    model = ModelAvailability
    can_delete = False
    readonly_fields = ["available", "reason", "backend", "checked_at"]
    extra = 0


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "architecture", "input_size", "parameters", "confidence_threshold", "aliases_list",
                    "is_available", "created_at"]
    list_filter = ["architecture"]
    search_fields = ["name", "notes"]
    readonly_fields = ["architecture", "labels", "input_size", "normalization", "artifact", "artifact_sha256",
                       "size_bytes", "parameters", "metrics", "dataset_version", "training_job_id", "created_at"]
    inlines = [AvailabilityInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("availability").prefetch_related("aliases")

    @admin.display(description="aliases")
    def aliases_list(self, obj):
        return ", ".join(sorted(a.name for a in obj.aliases.all())) or "—"

    @admin.display(description="available", boolean=True)
    def is_available(self, obj):
        availability = getattr(obj, "availability", None)
        return None if availability is None else availability.available


class AliasForm(forms.ModelForm):
    why = forms.CharField(required=False, help_text="Recorded in the alias history.")
    force = forms.BooleanField(required=False, help_text="Override the promotion gate.")

    class Meta:
        model = ModelAlias
        fields = ["name", "version"]


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    """Every change goes through the service, so it is gated, warmed and recorded like the API's."""

    form = AliasForm
    list_display = ["name", "version", "updated_at", "updated_by"]
    actions = ["roll_back"]

    def get_readonly_fields(self, request, obj=None):
        return ["name"] if obj else []

    def save_model(self, request, obj, form, change):
        try:
            services.model_alias_set(name=obj.name, version=form.cleaned_data["version"], actor=request.user,
                                     why=form.cleaned_data.get("why", ""), force=form.cleaned_data.get("force", False))
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)

    @admin.action(description="Roll back the selected aliases to their previous version")
    def roll_back(self, request, queryset):
        for alias in queryset:
            try:
                change = services.model_alias_rollback(name=alias.name, actor=request.user, why="admin rollback")
                self.message_user(request, f"{alias.name}: {change.from_version} → {change.to_version}")
            except ServiceError as exc:
                self.message_user(request, f"{alias.name}: {exc.message}", messages.ERROR)


@admin.register(AliasChange)
class AliasChangeAdmin(admin.ModelAdmin):
    list_display = ["at", "alias", "kind", "from_version", "to_version", "actor", "why"]
    list_filter = ["alias", "kind"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
