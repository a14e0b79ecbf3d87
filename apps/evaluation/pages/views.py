"""The evaluation pages: runs, one run's tables and charts, two runs compared, and a run's collection plan."""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from apps.core.api import ServiceError
from apps.core.pages import LIST_LIMIT, staff_action
from apps.evaluation import services
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import runs_with_relations

from . import context


def evaluation_list(request):
    runs = list(runs_with_relations()[:LIST_LIMIT])
    return render(request, "evaluation/list.html", {"runs": runs})


def evaluation_detail(request, pk: int):
    run = get_object_or_404(runs_with_relations(), pk=pk)
    others = runs_with_relations().filter(status=EvaluationRun.Status.SUCCEEDED, split=run.split).exclude(pk=run.pk)[:50]
    return render(request, "evaluation/detail.html", {
        "run": run, "others": others, **context.run_page(run),
        "is_active": run.status in (EvaluationRun.Status.QUEUED, EvaluationRun.Status.RUNNING),
    })


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
