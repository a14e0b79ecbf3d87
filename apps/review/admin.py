"""The review app's records in the admin, read only: changes go through the review API and its services
(every decision is an ImageEvent and part of an undoable batch)."""
from django.contrib import admin

from .models import ReviewBatch, ReviewDecision, Suggestion


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Suggestion)
class SuggestionAdmin(ReadOnly):
    list_display = ["image", "model_version", "claimed_slug", "claimed_probability", "agrees", "flagged", "doubt",
                    "created_at"]
    list_filter = ["flagged", "agrees", "model_version"]
    list_select_related = ["image", "model_version"]
    search_fields = ["claimed_slug"]


class ReviewDecisionInline(admin.TabularInline):
    model = ReviewDecision
    extra = 0
    can_delete = False
    fields = ["image", "action", "character", "reason", "before", "after"]
    readonly_fields = fields


@admin.register(ReviewBatch)
class ReviewBatchAdmin(ReadOnly):
    list_display = ["id", "kind", "actor", "model_version", "counts", "created_at", "undone_at"]
    list_filter = ["kind"]
    list_select_related = ["actor", "model_version"]
    inlines = [ReviewDecisionInline]
