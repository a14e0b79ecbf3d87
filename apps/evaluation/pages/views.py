"""The evaluation pages: runs (and a form to start one), one run's tables and charts with its model's promotion
to ``default`` when it beats the current one, two runs compared, and a run's collection plan."""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from apps.characters.models import DatasetVersion
from apps.core.api import ServiceError
from apps.core.pages import LIST_LIMIT, form_action, staff_action
from apps.evaluation import services
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import alias_comparison, runs_with_relations
from apps.inference.models import ModelVersion

from . import context
from .forms import EvaluationStartForm


def evaluation_list(request, form: EvaluationStartForm | None = None):
    runs = list(runs_with_relations()[:LIST_LIMIT])
    if form is None and request.user.is_staff:
        form = EvaluationStartForm()
    return render(request, "evaluation/list.html", {
        "runs": runs, "form": form,
        "can_evaluate": ModelVersion.objects.exists() and DatasetVersion.objects.exists(),
    }, status=400 if form is not None and form.is_bound else 200)


def _start(request, form):
    """Evaluate a model on a dataset version's split through the evaluation service (as the API does)."""
    run = services.evaluation_run_create(origin=EvaluationRun.Origin.API, requested_by=request.user,
                                         **form.cleaned_data)
    messages.success(request, f"Evaluation {run.pk} queued: {run.model_version.name} on "
                     f"{run.dataset_version.name}/{run.split}.")
    return redirect("evaluation:detail", pk=run.pk)


evaluation_start = form_action(EvaluationStartForm, page=evaluation_list, act=_start,
                               fields={"invalid_split": "split", "empty_split": "split"})


def evaluation_detail(request, pk: int):
    run = get_object_or_404(runs_with_relations(), pk=pk)
    others = runs_with_relations().filter(status=EvaluationRun.Status.SUCCEEDED, split=run.split).exclude(pk=run.pk)[:50]
    return render(request, "evaluation/detail.html", {
        "run": run, "others": others, **context.run_page(run),
        "is_active": run.status in (EvaluationRun.Status.QUEUED, EvaluationRun.Status.RUNNING),
        "promotion": alias_comparison(run) if not run.is_active else None,
    })


@staff_action
def evaluation_promote(request, pk: int):
    """Point ``default`` at the run's model when it beats the current default on the same version and split."""
    run = get_object_or_404(runs_with_relations(), pk=pk)
    change = services.evaluation_promote(run=run, actor=request.user)
    messages.success(request, f"{change.to_version.name} is {change.alias} now"
                     f"{f' (was {change.from_version.name})' if change.from_version else ''}.")
    return redirect("evaluation:detail", pk=run.pk)


def evaluation_compare(request):
    base = get_object_or_404(runs_with_relations(), pk=_int(request.GET.get("base")))
    other = get_object_or_404(runs_with_relations(), pk=_int(request.GET.get("other")))
    try:
        comparison = context.compare_page(base=base, other=other)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("evaluation:detail", pk=base.pk)
    return render(request, "evaluation/compare.html", {**comparison, "base": base, "other": other})


@staff_action
def evaluation_plan(request, pk: int):
    run = get_object_or_404(EvaluationRun, pk=pk)
    jobs = services.evaluation_plan_create(run=run, requested_by=request.user,
                                           include_low_support=request.POST.get("include_low_support") == "on")
    messages.success(request, f"Collection plan from evaluation {run.pk}: {len(jobs)} crawl job(s) queued."
                     if jobs else f"Evaluation {run.pk} asks for no new images (no tiered character has a source).")
    return redirect(f"{reverse('crawling:list')}?status=queued" if jobs else reverse("evaluation:detail", args=[run.pk]))


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Http404("Give the runs' ids as ?base=ID&other=ID.") from None
