"""Curation in the admin: thumbnails, filters, bulk approve / reject / relabel, near-duplicates."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.files.storage import default_storage
from django.db.models import Count, F, Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from . import services
from .models import Character, DatasetItem, DatasetVersion, Image, ImageEvent, Series
from .selectors import latest_dataset_version, near_duplicates_of


def thumb_html(image: Image, size: int = 80):
    if not image.thumbnail:
        return "—"
    return format_html('<img src="{}" loading="lazy" style="max-width:{}px;max-height:{}px" alt="{}">',
                       default_storage.url(image.thumbnail), size, size, image.sha256[:12])


class InputFilter(admin.SimpleListFilter):
    """A text box instead of a list of links: scales to thousands of characters."""

    template = "admin/input_filter.html"

    def lookups(self, request, model_admin):
        return ((None, None),)  # Django shows the filter only when lookups are non-empty

    def choices(self, changelist):
        query = changelist.get_filters_params()
        query.pop(self.parameter_name, None)
        yield {"get_query": query, "value": self.value() or ""}


class CharacterFilter(InputFilter):
    title = "character (slug)"
    parameter_name = "character_slug"

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(character__slug=self.value())
        return queryset


class SeriesFilter(admin.SimpleListFilter):
    title = "series"
    parameter_name = "series"

    def lookups(self, request, model_admin):
        return list(Series.objects.values_list("slug", "name"))

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(character__series__slug=self.value())
        return queryset


class SplitFilter(admin.SimpleListFilter):
    title = "split (latest version)"
    parameter_name = "split"

    def lookups(self, request, model_admin):
        return DatasetItem.Split.choices + [("none", "not in the latest version")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        latest = latest_dataset_version()
        if value == "none":
            return queryset.exclude(dataset_items__version=latest) if latest else queryset
        return queryset.filter(dataset_items__version=latest, dataset_items__split=value)


class ResolutionFilter(admin.SimpleListFilter):
    title = "shorter side"
    parameter_name = "side"
    BUCKETS = {"lt128": (0, 127), "128-255": (128, 255), "256-511": (256, 511), "512+": (512, 10**9)}

    def lookups(self, request, model_admin):
        return [(k, k.replace("lt", "< ")) for k in self.BUCKETS]

    def queryset(self, request, queryset):
        if self.value() not in self.BUCKETS:
            return queryset
        low, high = self.BUCKETS[self.value()]
        # The shorter side is the width when width <= height, else the height.
        return queryset.filter(
            (Q(width__lte=F("height")) & Q(width__gte=low, width__lte=high))
            | (Q(height__lt=F("width")) & Q(height__gte=low, height__lte=high))
        )


class RejectForm(forms.Form):
    reason = forms.ChoiceField(choices=sorted(services.REJECT_REASONS.items()))


class RelabelForm(forms.Form):
    character = forms.ModelChoiceField(
        queryset=Character.objects.all(), required=False,
        widget=AutocompleteSelect(Image._meta.get_field("character"), admin.site),
        help_text="Leave empty to make the images unlabelled.",
    )
    reason = forms.CharField(required=False)


class ImageEventInline(admin.TabularInline):
    model = ImageEvent
    extra = 0
    can_delete = False
    fields = ["at", "kind", "from_value", "to_value", "reason", "actor"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["thumb", "short_sha", "character", "series", "status", "reason", "resolution", "source_kind",
                    "source_site", "created_at"]
    list_display_links = ["thumb", "short_sha"]
    list_select_related = ["character__series"]
    list_filter = [SeriesFilter, CharacterFilter, "status", SplitFilter, "source_kind", "source_site",
                   ResolutionFilter, "format"]
    search_fields = ["sha256", "original_name", "source_url", "source_post_id", "character__name",
                     "character__slug"]
    list_per_page = 50
    autocomplete_fields = ["character"]
    actions = ["approve", "reject", "relabel", "show_near_duplicates"]
    inlines = [ImageEventInline]
    readonly_fields = ["preview", "sha256", "file", "format", "width", "height", "bytes", "phash_hex", "dup_group",
                       "source_kind", "source_site", "source_url", "source_post_id", "source_tags", "original_name",
                       "created_at", "updated_at", "near_duplicates_link"]
    fields = ["preview", "character", "status", "reason"] + readonly_fields[1:]

    @admin.display(description="")
    def thumb(self, obj):
        return thumb_html(obj)

    @admin.display(description="preview")
    def preview(self, obj):
        return thumb_html(obj, 320)

    @admin.display(description="sha256", ordering="sha256")
    def short_sha(self, obj):
        return obj.sha256[:12]

    @admin.display(description="series", ordering="character__series__slug")
    def series(self, obj):
        return obj.character.series.slug if obj.character else "—"

    @admin.display(description="size")
    def resolution(self, obj):
        return f"{obj.width}×{obj.height}"

    @admin.display(description="pHash")
    def phash_hex(self, obj):
        from .phash import phash_hex

        return phash_hex(obj.phash)

    @admin.display(description="near-duplicates")
    def near_duplicates_link(self, obj):
        url = reverse("admin:characters_image_near_duplicates", args=[obj.pk])
        return format_html('<a href="{}">show side by side</a>', url)

    def has_add_permission(self, request):
        return False  # images arrive through the ingest service: import, upload API, crawls

    def save_model(self, request, obj, form, change):
        # Label and status edits go through the services so they are validated and audited.
        if "character" in form.changed_data:
            services.image_relabel(image_ids=[obj.pk], character=obj.character, actor=request.user)
        if "status" in form.changed_data or "reason" in form.changed_data:
            services.image_set_status(image_ids=[obj.pk], status=obj.status, actor=request.user, reason=obj.reason)
        obj.refresh_from_db()

    def get_urls(self):
        urls = [path("<int:pk>/near-duplicates/", self.admin_site.admin_view(self.near_duplicates_view),
                     name="characters_image_near_duplicates")]
        return urls + super().get_urls()

    def near_duplicates_view(self, request, pk):
        image = get_object_or_404(Image.objects.select_related("character__series"), pk=pk)
        from .phash import hamming

        others = [(other, hamming(image.phash, other.phash)) for other in near_duplicates_of(image)]
        others.sort(key=lambda pair: pair[1])
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "image": image,
                   "others": others, "title": f"Near-duplicates of image {image.pk}",
                   "thumb": thumb_html(image, 240),
                   "other_thumbs": [(o, d, thumb_html(o, 240)) for o, d in others]}
        return TemplateResponse(request, "admin/characters/near_duplicates.html", context)

    @admin.action(description="Approve selected images")
    def approve(self, request, queryset):
        n = services.image_approve(image_ids=queryset.values_list("pk", flat=True), actor=request.user)
        self.message_user(request, f"Approved {n} images.", messages.SUCCESS)

    def _intermediate(self, request, queryset, form, action, title):
        return TemplateResponse(request, "admin/characters/action_form.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": title,
            "form": form, "action": action, "queryset": queryset, "count": queryset.count(),
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME), "media": self.media + form.media,
        })

    @admin.action(description="Reject selected images (with a reason)")
    def reject(self, request, queryset):
        form = RejectForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            n = services.image_reject(image_ids=queryset.values_list("pk", flat=True),
                                      reason=form.cleaned_data["reason"], actor=request.user)
            self.message_user(request, f"Rejected {n} images.", messages.SUCCESS)
            return None
        return self._intermediate(request, queryset, form, "reject", "Reject images")

    @admin.action(description="Relabel selected images")
    def relabel(self, request, queryset):
        form = RelabelForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            n = services.image_relabel(image_ids=queryset.values_list("pk", flat=True),
                                       character=form.cleaned_data["character"], actor=request.user,
                                       reason=form.cleaned_data["reason"])
            self.message_user(request, f"Relabelled {n} images.", messages.SUCCESS)
            return None
        return self._intermediate(request, queryset, form, "relabel", "Relabel images")

    @admin.action(description="Show near-duplicates side by side")
    def show_near_duplicates(self, request, queryset):
        first = queryset.order_by("pk").first()
        return HttpResponseRedirect(reverse("admin:characters_image_near_duplicates", args=[first.pk]))


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "character_count"]
    search_fields = ["slug", "name"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_characters=Count("characters"))

    @admin.display(description="characters", ordering="n_characters")
    def character_count(self, obj):
        return obj.n_characters


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "series", "active", "target_image_count", "approved_count", "pending_count",
                    "image_count"]
    list_filter = ["active", "series"]
    list_select_related = ["series"]
    search_fields = ["name", "slug", "aliases", "series__slug"]
    ordering = ["series__slug", "name"]
    list_per_page = 100

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            n_images=Count("images"),
            n_approved=Count("images", filter=Q(images__status=Image.Status.APPROVED)),
            n_pending=Count("images", filter=Q(images__status=Image.Status.PENDING)),
        )

    @admin.display(description="images", ordering="n_images")
    def image_count(self, obj):
        url = reverse("admin:characters_image_changelist") + f"?character_slug={obj.slug}"
        return format_html('<a href="{}">{}</a>', url, obj.n_images)

    @admin.display(description="approved", ordering="n_approved")
    def approved_count(self, obj):
        return obj.n_approved

    @admin.display(description="pending", ordering="n_pending")
    def pending_count(self, obj):
        return obj.n_pending


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "created_by", "split_counts", "characters", "leaks", "short_hash"]
    readonly_fields = ["name", "content_hash", "created_by", "params", "counts", "excluded", "leak_report",
                       "created_at"]
    fields = readonly_fields + ["notes"]

    def has_add_permission(self, request):
        return False  # freeze through `manage.py freeze_dataset` or the API: the split logic lives there

    @admin.display(description="splits")
    def split_counts(self, obj):
        return format_html_join(" ", "{}: {}", obj.counts.get("splits", {}).items())

    @admin.display(description="characters")
    def characters(self, obj):
        return obj.counts.get("num_characters", 0)

    @admin.display(description="leaks")
    def leaks(self, obj):
        return obj.leak_report.get("leaks", 0)

    @admin.display(description="hash")
    def short_hash(self, obj):
        return obj.content_hash[:12]
