"""Crawl jobs in the admin (live counters, cancel, retry), and a crawl action on characters.

The characters app owns ``CharacterAdmin``; crawling sits above it and must not be imported by it.
So ``CrawlingConfig.ready()`` (which runs after the admin has autodiscovered every ``admin.py``)
appends ``crawl_for_characters`` to whatever admin is registered for ``Character``, through the
public ``AdminSite.get_model_admin``. If none is registered, nothing happens.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.utils.html import format_html, format_html_join

from apps.characters.models import Character
from apps.core.api import ServiceError

from . import services
from .models import COUNTER_FIELDS, CrawlCursor, CrawlJob, SeenPost
from .sources import sources

REFRESH_SECONDS = 3


# What a person sets when starting a job, in the order the form shows it.
JOB_OPTIONS = ["source", "character", "query", "quota", "approve", "solo", "auto_approve_min_confidence", "max_pages",
               "threads"]


class CrawlJobForm(forms.ModelForm):
    source = forms.ChoiceField(choices=())

    class Meta:
        model = CrawlJob
        fields = JOB_OPTIONS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "source" in self.fields:  # on the change page every field is read-only
            self.fields["source"].choices = [(name, name) for name in sources.names()]

    def clean(self):
        data = super().clean()
        if not self.errors:
            try:
                _adapter, data["query"] = services.crawl_job_prepare(
                    source=data["source"], character=data.get("character"), query=data.get("query", ""),
                    quota=data["quota"],
                )
                services.auto_approve_validate(data.get("auto_approve_min_confidence"))
            except ServiceError as exc:
                raise forms.ValidationError(exc.message, code=exc.code) from None
        return data


@admin.register(CrawlJob)
class CrawlJobAdmin(admin.ModelAdmin):
    form = CrawlJobForm
    list_display = ["id", "source", "character", "status", "progress_bar", "listed", "skipped_known", "downloaded",
                    "accepted", "exact_duplicates", "near_duplicates", "too_small", "refused", "errors",
                    "stop_reason", "created_at"]
    list_filter = ["status", "source", "origin", "solo"]
    search_fields = ["query", "character__slug", "character__name"]
    list_select_related = ["character__series"]
    actions = ["cancel_jobs", "retry_jobs"]
    counters = ["steps_used", "status", "stop_reason", "progress_bar", *COUNTER_FIELDS, "refused_by_reason",
                "errors_by_kind", "ingest_seconds", "error", "origin", "evaluation_run_id", "requested_by", "task_id",
                "attempts", "started_at", "heartbeat_at", "finished_at", "cancel_requested"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [*JOB_OPTIONS, *self.counters]

    def get_fields(self, request, obj=None):
        return JOB_OPTIONS if obj is None else [*JOB_OPTIONS, *self.counters]

    def has_delete_permission(self, request, obj=None):
        return bool(obj is None or not obj.is_active) and super().has_delete_permission(request, obj)

    @admin.display(description="progress")
    def progress_bar(self, obj: CrawlJob):
        return format_html('<progress value="{}" max="{}"></progress> {}/{}', obj.accepted, obj.quota,
                           obj.accepted, obj.quota)

    @admin.display(description="steps")
    def steps_used(self, obj: CrawlJob):
        """The checks the crawl runs, in order, each with what it does in this crawl."""
        if not obj.steps:
            return "—"
        return format_html("<ol>{}</ol>", format_html_join(
            "", "<li><code>{}</code> ({}): {}</li>",
            ((step.get("name", ""), step.get("stage", ""), step.get("note", "")) for step in obj.steps),
        ))

    def save_model(self, request, obj, form, change):
        if change:
            return  # a job's parameters are fixed once created; cancel and retry are actions
        job = services.crawl_job_create(
            source=obj.source, character=obj.character, query=obj.query, quota=obj.quota, approve=obj.approve,
            solo=obj.solo, auto_approve_min_confidence=obj.auto_approve_min_confidence, max_pages=obj.max_pages,
            threads=obj.threads, requested_by=request.user, origin="admin",
        )
        obj.pk = job.pk
        obj._state.adding = False

    def _live(self, extra_context, active: bool):
        return {**(extra_context or {}), "refresh_seconds": REFRESH_SECONDS if active else 0}

    def changelist_view(self, request, extra_context=None):
        active = CrawlJob.objects.filter(status__in=CrawlJob.ACTIVE).exists()
        return super().changelist_view(request, self._live(extra_context, active))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        active = CrawlJob.objects.filter(pk=object_id, status__in=CrawlJob.ACTIVE).exists()
        return super().change_view(request, object_id, form_url, self._live(extra_context, active))

    @admin.action(description="Cancel the selected crawl jobs")
    def cancel_jobs(self, request, queryset):
        self._each(request, queryset, services.crawl_job_cancel, "cancelled")

    @admin.action(description="Retry the selected crawl jobs")
    def retry_jobs(self, request, queryset):
        self._each(request, queryset, services.crawl_job_retry, "queued again")

    def _each(self, request, queryset, operation, done: str) -> None:
        count = 0
        for job in queryset:
            try:
                operation(job=job)
                count += 1
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.WARNING)
        if count:
            self.message_user(request, f"{count} crawl job(s) {done}.", messages.SUCCESS)


@admin.register(CrawlCursor)
class CrawlCursorAdmin(admin.ModelAdmin):
    list_display = ["source", "query", "newest_id", "oldest_id", "reached_end", "runs", "last_run_at"]
    list_filter = ["source", "reached_end"]
    search_fields = ["query"]


@admin.register(SeenPost)
class SeenPostAdmin(admin.ModelAdmin):
    list_display = ["source", "post_id", "md5", "outcome", "image", "job", "seen_at"]
    list_filter = ["source", "outcome"]
    search_fields = ["post_id", "md5"]
    raw_id_fields = ["image", "job"]


@admin.action(description="Crawl images for the selected characters (up to their target count)")
def crawl_for_characters(modeladmin, request, queryset):
    """A collection plan for the selection: each character's missing images, split over the sources
    that have its tags (KYARA_CRAWL_PLAN_SOURCES)."""
    if not request.user.has_perm("crawling.add_crawljob"):
        modeladmin.message_user(request, "You may not start crawl jobs.", messages.ERROR)
        return
    characters = queryset.annotate(num_kept=Count("images", filter=~Q(images__status="rejected")))
    targets = [(c, c.target_image_count - c.num_kept) for c in characters if c.target_image_count > c.num_kept]
    try:
        jobs = services.collection_plan_create(targets=targets, requested_by=request.user)
    except ServiceError as exc:
        modeladmin.message_user(request, exc.message, messages.ERROR)
        return
    covered = {job.character_id for job in jobs}
    modeladmin.message_user(request, f"Started {len(jobs)} crawl job(s) for {len(covered)} character(s).",
                            messages.SUCCESS if jobs else messages.WARNING)
    missing = [c.slug for c, _wanted in targets if c.pk not in covered]
    if missing:
        modeladmin.message_user(request, "No plan source has tags for: " + ", ".join(missing[:20]), messages.WARNING)


def attach_character_actions(site: admin.AdminSite = admin.site) -> bool:
    """Add the crawl action to the registered Character admin; False when none is registered."""
    if not site.is_registered(Character):
        return False
    model_admin = site.get_model_admin(Character)
    actions = list(model_admin.actions or [])
    if crawl_for_characters not in actions:
        model_admin.actions = [*actions, crawl_for_characters]
    return True
