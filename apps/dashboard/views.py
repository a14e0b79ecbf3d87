"""The pages. Each view reads through selectors and acts through services; the browser's JavaScript
polls the REST API (/api/v1/...) for what changes while a page is open."""
from __future__ import annotations

import functools

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import user_passes_test
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.characters.models import Character
from apps.characters.selectors import dataset_stats, thin_characters
from apps.core.api import ServiceError
from apps.crawling import services as crawling
from apps.crawling.models import COUNTER_FIELDS, CrawlJob
from apps.crawling.selectors import crawl_jobs_with_relations
from apps.evaluation import services as evaluation
from apps.evaluation.models import EvaluationRun
from apps.inference import services as inference
from apps.inference.loading import machine_key
from apps.inference.models import AliasChange, ModelAlias, ModelVersion
from apps.inference.selectors import metrics_summary
from apps.training import services as training
from apps.training.models import TrainingJob

from . import evaluation as evaluation_pages
from . import selectors
from .charts import ChartLibraryMissing, plotly_js_bytes
from .forms import AliasRollbackForm, AliasSetForm, CrawlStartForm

LIST_LIMIT = 200

staff_required = user_passes_test(lambda user: user.is_active and user.is_staff)


def staff_action(view):
    """A POST-only, staff-only action: a service refusal comes back as a message on the page it came from."""

    @functools.wraps(view)
    @require_POST
    @staff_required
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except ServiceError as exc:
            messages.error(request, exc.message)
            return redirect(request.POST.get("next") or request.META.get("HTTP_REFERER") or reverse("home"))

    return wrapper


def job_action(service, model, detail: str, done: str):
    """A staff action on one job (cancel, retry, resume): the service acts, the job's page shows the result."""

    @staff_action
    def view(request, pk: int):
        service(job=get_object_or_404(model, pk=pk))
        messages.success(request, done.format(pk=pk))
        return redirect(detail, pk=pk)

    return view


# --- Home and predict ---------------------------------------------------------------------------

def home(request):
    return render(request, "dashboard/home.html", selectors.home_summary())


def predict(request):
    aliases = list(ModelAlias.objects.select_related("version").order_by("name"))
    versions = list(ModelVersion.objects.order_by("-created_at", "-id").values_list("name", flat=True)[:50])
    return render(request, "dashboard/predict.html", {
        "aliases": aliases, "versions": versions, "top_k": settings.KYARA_PREDICT_TOP_K,
        "batch_max": settings.KYARA_PREDICT_BATCH_MAX, "max_bytes": settings.KYARA_PREDICT_MAX_BYTES,
    })


@require_GET
def predict_examples(request):
    """``?characters=a,b``: a few approved pictures of each, for the predict page."""
    slugs = [s.strip() for s in request.GET.get("characters", "").split(",") if s.strip()]
    return JsonResponse({"characters": selectors.example_images(slugs)})


# --- Dataset -------------------------------------------------------------------------------------

def dataset(request):
    stats = dataset_stats()
    run, quality = evaluation_pages.latest_character_metrics()
    chart = {"characters": [], "approved": [], "pending": [], "rejected": []}
    for series in stats["series"]:
        for row in series["characters"]:
            row["quality"] = quality.get(row["character"])
            chart["characters"].append(row["name"])
            for status in ("approved", "pending", "rejected"):
                chart[status].append(row["status"].get(status, 0))
    return render(request, "dashboard/dataset.html", {"stats": stats, "chart": chart, "run": run,
                                                      "thin_threshold": settings.KYARA_THIN_CHARACTER_IMAGES})


def character_detail(request, slug: str):
    character = get_object_or_404(Character.objects.select_related("series"), slug=slug)
    try:
        page = int(request.GET.get("page", 1))
    except ValueError:
        page = 1
    context = selectors.character_page(character, page=page)
    return render(request, "dashboard/character.html", {"character": character, **context})


# --- Crawl jobs ----------------------------------------------------------------------------------

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
    return render(request, "dashboard/crawl_list.html", {
        "jobs": jobs[:LIST_LIMIT], "form": form, "character": character, "status": status,
        "statuses": CrawlJob.Status.values,
    }, status=400 if form is not None and form.is_bound else 200)


@require_POST
@staff_required
def crawl_start(request):
    form = CrawlStartForm(request.POST)
    if not form.is_valid():
        return crawl_list(request, form=form)
    try:
        job = crawling.crawl_job_create(requested_by=request.user, origin="api", **form.cleaned_data)
    except ServiceError as exc:
        form.add_error(None, exc.message)
        return crawl_list(request, form=form)
    messages.success(request, f"Crawl job {job.pk} queued.")
    return redirect("crawl-detail", pk=job.pk)


def crawl_detail(request, pk: int):
    job = get_object_or_404(crawl_jobs_with_relations(), pk=pk)
    counters = [(name, name.replace("_", " "), getattr(job, name)) for name in COUNTER_FIELDS]
    return render(request, "dashboard/crawl_detail.html", {"job": job, "counters": counters})


crawl_cancel = job_action(crawling.crawl_job_cancel, CrawlJob, "crawl-detail", "Crawl job {pk}: cancel requested.")
crawl_retry = job_action(crawling.crawl_job_retry, CrawlJob, "crawl-detail", "Crawl job {pk} queued again.")


# --- Training jobs -------------------------------------------------------------------------------

def training_list(request):
    jobs = TrainingJob.objects.select_related("dataset_version", "model_version").order_by("-created_at", "-id")
    return render(request, "dashboard/training_list.html", {"jobs": jobs[:LIST_LIMIT]})


def training_detail(request, pk: int):
    job = get_object_or_404(TrainingJob.objects.select_related("dataset_version", "model_version", "created_by"),
                            pk=pk)
    effective = (job.summary or {}).get("config") or {}
    # What was asked, and what the recipe filled in where nothing was (shown as "value (recipe)").
    config = [(key, value if value is not None else effective.get(key, "from the recipe"), value is None)
              for key, value in sorted((job.config or {}).items())]
    return render(request, "dashboard/training_detail.html", {
        "job": job, "config": config, "epochs": list(job.epochs.all()),
        "can_resume": job.status in TrainingJob.RESUMABLE and job.has_checkpoint,
        "thin": thin_characters(job.dataset_version), "thin_threshold": settings.KYARA_THIN_CHARACTER_IMAGES,
    })


training_cancel = job_action(training.training_job_cancel, TrainingJob, "training-detail",
                             "Training job {pk}: cancel requested.")
training_resume = job_action(training.training_job_resume, TrainingJob, "training-detail",
                             "Training job {pk} queued to resume from its last checkpoint.")


# --- Models --------------------------------------------------------------------------------------

def model_list(request, set_form: AliasSetForm | None = None):
    versions = list(ModelVersion.objects.select_related("availability", "dataset_version")
                    .prefetch_related("aliases").order_by("-created_at", "-id")[:LIST_LIMIT])
    here = machine_key()[0]
    for version in versions:
        version.summary = metrics_summary(version.metrics)
        version.runtime_here = (version.runtime_choices or {}).get(here)  # the choice this server loads
        version.runtime_elsewhere = [record for key, record in (version.runtime_choices or {}).items() if key != here]
    aliases = list(ModelAlias.objects.select_related("version", "updated_by").order_by("name"))
    history = list(AliasChange.objects.select_related("from_version", "to_version", "actor")[:100])
    if set_form is None and request.user.is_staff:
        set_form = AliasSetForm()
    return render(request, "dashboard/models.html", {
        "versions": versions, "aliases": aliases, "history": history, "set_form": set_form,
        "rollback_form": AliasRollbackForm() if request.user.is_staff else None,
    }, status=400 if set_form is not None and set_form.is_bound else 200)


@require_POST
@staff_required
def alias_set(request):
    form = AliasSetForm(request.POST)
    if not form.is_valid():
        return model_list(request, set_form=form)
    data = form.cleaned_data
    try:
        change = inference.model_alias_set(name=data["alias"], version=data["version"], actor=request.user,
                                           why=data["why"], force=data["force"])
    except ServiceError as exc:
        form.add_error(None, exc.message)
        return model_list(request, set_form=form)
    messages.success(request, f"{change.alias} → {change.to_version.name}")
    return redirect("model-list")


@staff_action
def alias_rollback(request, name: str):
    form = AliasRollbackForm(request.POST)
    why = form.cleaned_data["why"] if form.is_valid() else ""
    change = inference.model_alias_rollback(name=name, actor=request.user, why=why)
    messages.success(request, f"{change.alias} rolled back to {change.to_version.name}")
    return redirect("model-list")


# --- The chart library ---------------------------------------------------------------------------

def plotly_js(request, version: str):
    from .charts import plotly_version

    if version != plotly_version():
        raise Http404("Unknown chart library version.")
    try:
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        body = plotly_js_bytes(gzipped)
    except ChartLibraryMissing as exc:
        return HttpResponse(f"console.error({str(exc)!r});", content_type="text/javascript", status=503)
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    if gzipped:
        response["Content-Encoding"] = "gzip"
    response["Vary"] = "Accept-Encoding"
    response["Cache-Control"] = "public, max-age=31536000, immutable"  # the URL changes with the version
    return response


# --- Evaluation ----------------------------------------------------------------------------------

def evaluation_list(request):
    runs = list(evaluation_pages.runs_with_relations()[:LIST_LIMIT])
    return render(request, "dashboard/evaluation_list.html", {"runs": runs})


def evaluation_detail(request, pk: int):
    run = get_object_or_404(evaluation_pages.runs_with_relations(), pk=pk)
    others = evaluation_pages.runs_with_relations().filter(status=EvaluationRun.Status.SUCCEEDED,
                                                           split=run.split).exclude(pk=run.pk)[:50]
    return render(request, "dashboard/evaluation_detail.html", {
        "run": run, "others": others, **evaluation_pages.run_page(run),
        "is_active": run.status in (EvaluationRun.Status.QUEUED, EvaluationRun.Status.RUNNING),
    })


def evaluation_compare(request):
    base = get_object_or_404(evaluation_pages.runs_with_relations(), pk=_int(request.GET.get("base")))
    other = get_object_or_404(evaluation_pages.runs_with_relations(), pk=_int(request.GET.get("other")))
    try:
        comparison = evaluation_pages.compare_page(base=base, other=other)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("evaluation-detail", pk=base.pk)
    return render(request, "dashboard/evaluation_compare.html", {**comparison, "base": base, "other": other})


@staff_action
def evaluation_plan(request, pk: int):
    run = get_object_or_404(EvaluationRun, pk=pk)
    jobs = evaluation.evaluation_plan_create(run=run, requested_by=request.user,
                                             include_low_support=request.POST.get("include_low_support") == "on")
    messages.success(request, f"Collection plan from evaluation {run.pk}: {len(jobs)} crawl job(s) queued."
                     if jobs else f"Evaluation {run.pk} asks for no new images (no tiered character has a source).")
    return redirect(f"{reverse('crawl-list')}?status=queued" if jobs else reverse("evaluation-detail", args=[run.pk]))


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Http404("Give the runs' ids as ?base=ID&other=ID.") from None
