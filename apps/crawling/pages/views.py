"""The crawl pages: the list with a start form, one job's page, and its cancel and retry actions."""
from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render

from apps.characters.models import Character
from apps.core.pages import LIST_LIMIT, form_action, job_action
from apps.crawling import services
from apps.crawling.models import COUNTER_FIELDS, CrawlJob
from apps.crawling.selectors import crawl_jobs_with_relations

from .forms import CrawlStartForm


def crawl_list(request, form: CrawlStartForm | None = None):
    jobs = crawl_jobs_with_relations().order_by("-created_at", "-id")
    character = request.GET.get("character", "")
    status = request.GET.get("status", "")
    if character:
        jobs = jobs.filter(character__slug=character)
    if status in CrawlJob.Status.values:
        jobs = jobs.filter(status=status)
    if form is None and request.user.is_staff:
        initial = {}
        if character:
            initial["character"] = Character.objects.filter(slug=character).first()
        form = CrawlStartForm(initial=initial)
    return render(request, "crawling/list.html", {
        "jobs": jobs[:LIST_LIMIT], "form": form, "character": character, "status": status,
        "statuses": CrawlJob.Status.values,
    }, status=400 if form is not None and form.is_bound else 200)


def _start(request, form):
    job = services.crawl_job_create(requested_by=request.user, origin="api", **form.cleaned_data)
    messages.success(request, f"Crawl job {job.pk} queued.")
    return redirect("crawling:detail", pk=job.pk)


crawl_start = form_action(CrawlStartForm, page=crawl_list, act=_start)


def crawl_detail(request, pk: int):
    job = get_object_or_404(crawl_jobs_with_relations(), pk=pk)
    counters = [(name, name.replace("_", " "), getattr(job, name)) for name in COUNTER_FIELDS]
    return render(request, "crawling/detail.html", {"job": job, "counters": counters})


crawl_cancel = job_action(services.crawl_job_cancel, CrawlJob, "crawling:detail", "Crawl job {pk}: cancel requested.")
crawl_retry = job_action(services.crawl_job_retry, CrawlJob, "crawling:detail", "Crawl job {pk} queued again.")
