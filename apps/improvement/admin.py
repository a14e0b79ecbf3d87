from django.contrib import admin

from .models import Cycle


@admin.register(Cycle)
class CycleAdmin(admin.ModelAdmin):
    """Read-mostly: cycles change through their services (the API, the pages, ``manage.py improve``)."""

    list_display = ["id", "status", "stage", "from_evaluation", "promoted", "created_at", "finished_at"]
    list_filter = ["status", "stage", "promoted", "origin"]
    readonly_fields = [field.name for field in Cycle._meta.fields] + ["crawl_jobs"]

    def has_add_permission(self, request) -> bool:
        return False
