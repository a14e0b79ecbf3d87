"""The dataset's staff pages: freeze a version (with a preview of its leak report and of what changed since the
last one), and import a zip of ``<series>_<character>/`` folders from the browser."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from apps.characters.models import ImportJob
from apps.characters.selectors import latest_dataset_version, version_changes, version_summary
from apps.characters.services.import_jobs import import_job_cancel, import_job_retry, import_job_start
from apps.characters.services.versions import LeakError, dataset_version_freeze, dataset_version_plan
from apps.core.api import ServiceError
from apps.core.limits import MULTIPART_SLACK_BYTES
from apps.core.pages import LIST_LIMIT, job_action, refuse_into, staff_required

from .forms import FreezeForm, FreezePreviewForm, ImportForm, suggested_version_name

# The freeze service's refusals, by the field they are about.
FREEZE_FIELDS = {"invalid_name": "name", "name_taken": "name", "invalid_fractions": "test",
                 "nothing_to_freeze": "min_images"}


@require_http_methods(["GET", "POST"])
@staff_required
def freeze(request):
    """GET: the freeze form. POST: freeze through the service, then the dataset page shows the new version."""
    if request.method == "GET":
        form = FreezeForm(initial={"name": suggested_version_name()})
    else:
        form = FreezeForm(request.POST)
        if form.is_valid():
            try:
                version = dataset_version_freeze(created_by=request.user, **form.cleaned_data)
            except LeakError as exc:
                pairs = exc.details["report"]["near_duplicate_pairs"][:5]
                listed = "; ".join(f"images {p['a']} and {p['b']} ({' / '.join(p['splits'])})" for p in pairs)
                form.add_error(None, f"{exc.message} {listed}")
            except ServiceError as exc:
                refuse_into(form, exc, FREEZE_FIELDS)
            else:
                messages.success(request, f"Froze dataset version {version.name}: "
                                 f"{version.num_images} images, {version.counts['num_characters']} characters.")
                return redirect(reverse("dashboard:dataset") + "#latest-version")
    return render(request, "characters/freeze.html", {
        "form": form, "latest": version_summary(latest_dataset_version()),
    }, status=400 if form.is_bound else 200)


@require_GET
@staff_required
def freeze_preview(request):
    """The version a freeze with these parameters would make (nothing is written): its splits, the characters
    left out, its leak report and the images added or removed per character since the latest version."""
    form = FreezePreviewForm(request.GET)
    context: dict = {"form": form}
    if form.is_valid():
        try:
            plan = dataset_version_plan(**form.cleaned_data)
        except ServiceError as exc:
            refuse_into(form, exc, FREEZE_FIELDS)
        else:
            context.update(counts=plan.counts(), excluded=plan.excluded, report=plan.report,
                           changes=version_changes(items=[(i, c) for i, c, _ in plan.items()],
                                                   previous=latest_dataset_version()))
    return render(request, "characters/_freeze_preview.html", context, status=200 if form.is_valid() else 400)


@require_http_methods(["GET", "POST"])
@staff_required
def imports(request):
    """GET: the upload form and the imports so far. POST: keep the zip and import it (small ones at once)."""
    if request.method == "GET":
        form = ImportForm()
    else:
        form = ImportForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                job = import_job_start(upload=form.cleaned_data["archive"], created_by=request.user,
                                       image_status=form.cleaned_data["image_status"])
            except ServiceError as exc:
                refuse_into(form, exc, {code: "archive" for code in (
                    "too_large", "corrupt_archive", "unsafe_archive", "empty_archive")})
            else:
                if job.status == ImportJob.Status.QUEUED:
                    messages.success(request, f"{job.original_name} is queued: a worker imports its {job.files} files.")
                return redirect("characters:import_detail", pk=job.pk)
    return render(request, "characters/imports.html", {
        "form": form, "jobs": ImportJob.objects.select_related("created_by")[:LIST_LIMIT],
    }, status=400 if form.is_bound else 200)


# A zip may be bigger than other form posts: the upload limit is the import's own (still under the global one).
imports.request_body_limit = lambda: settings.KYARA_IMPORT_MAX_BYTES + MULTIPART_SLACK_BYTES


@staff_required
def import_detail(request, pk: int):
    job = get_object_or_404(ImportJob.objects.select_related("created_by"), pk=pk)
    summary = job.summary or {}
    return render(request, "characters/import_detail.html", {
        "job": job, "summary": summary, "refused": sorted((summary.get("refused") or {}).items()),
        "retryable": job.status in ImportJob.RESUMABLE,
    })


import_retry = job_action(import_job_retry, ImportJob, "characters:import_detail", "Import {pk} queued again.")
import_cancel = job_action(import_job_cancel, ImportJob, "characters:import_detail",
                           "Import {pk}: cancel requested (it stops after the file it is importing).")
