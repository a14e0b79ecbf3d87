"""The cycle pages: the list with a start form (from an evaluation run), one cycle's stages (status, timings,
detail, links, the images that wait for a person) with its cancel, resume and continue actions."""
from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache

from apps.core.pages import LIST_LIMIT, form_action, job_action
from apps.evaluation.models import EvaluationRun
from apps.improvement import services
from apps.improvement.models import Cycle, Stage, StageStatus
from apps.improvement.selectors import cycles_with_relations, review_queue_links, stages_with_urls, waiting_images

from .forms import REFUSAL_FIELDS, CycleStartForm


def cycle_list(request, form: CycleStartForm | None = None):
    if form is None and request.user.is_staff:
        run = EvaluationRun.objects.filter(pk=_int(request.GET.get("evaluation")), status="succeeded").first()
        form = CycleStartForm(initial={"from_evaluation": run} if run else {})
    return render(request, "improvement/list.html", {
        "cycles": cycles_with_relations()[:LIST_LIMIT], "form": form,
    }, status=400 if form is not None and form.is_bound else 200)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _start(request, form):
    """Start a cycle through the service (as POST /api/v1/cycles/ does), then open its page."""
    cycle = services.cycle_create(requested_by=request.user, origin=Cycle.Origin.PAGE, **form.options())
    messages.success(request, f"Cycle {cycle.pk} started.")
    return redirect("improvement:detail", pk=cycle.pk)


cycle_start = form_action(CycleStartForm, page=cycle_list, act=_start, fields=REFUSAL_FIELDS)


def _stage_rows(cycle: Cycle) -> list[dict]:
    """Each stage as the page shows it: its record, with timestamps parsed and how long it took."""
    rows = []
    for record in stages_with_urls(cycle):
        started, finished = (parse_datetime(record[key]) if record.get(key) else None
                             for key in ("started_at", "finished_at"))
        rows.append({**record, "started": started, "finished": finished,
                     "seconds": (finished - started).total_seconds() if started and finished else None,
                     "current": record["name"] == cycle.stage and cycle.is_active})
    return rows


@never_cache  # a person comes back to it from the review queue: the browser must not show it as it was then
def cycle_detail(request, pk: int):
    cycle = get_object_or_404(cycles_with_relations(), pk=pk)
    wait = cycle.stage_record(Stage.WAIT) or {}
    waiting = waiting_images(cycle)
    return render(request, "improvement/detail.html", {
        "cycle": cycle, "stages": _stage_rows(cycle), "waiting": waiting,
        "review_queue": review_queue_links(cycle) if waiting else [],
        "can_resume": cycle.status in Cycle.RESUMABLE,
        "can_continue": cycle.is_active and wait.get("status") not in (StageStatus.SUCCEEDED, StageStatus.SKIPPED)
        and not cycle.skip_waiting,
        "splits": (cycle.comparison or {}).get("splits", []),
    })


def _on_cycle(service):
    """A cycle service in ``job_action``'s shape (it takes ``job=``)."""
    return lambda job: service(cycle=job)


cycle_cancel = job_action(_on_cycle(services.cycle_cancel), Cycle, "improvement:detail",
                          "Cycle {pk}: cancelled, with the crawls, training and evaluations it was running.")
cycle_resume = job_action(_on_cycle(services.cycle_resume), Cycle, "improvement:detail",
                          "Cycle {pk} goes on from the stage that had not finished.")
cycle_continue = job_action(_on_cycle(services.cycle_continue), Cycle, "improvement:detail",
                            "Cycle {pk} goes on without waiting for the review of the pending images.")
