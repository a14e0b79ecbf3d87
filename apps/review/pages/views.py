"""The review page: the queue of pending images as cards a reviewer decides with the keyboard.

The page carries the queue's first page as the API lists it (the same selector and serializer, so the
first paint needs no round trip and both say the same thing); ``static/kyara/review.js`` renders the
cards, sends decisions in small batches to ``POST /api/v1/review/decide`` and loads more from the API.
"""
from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from apps.characters.models import Image
from apps.characters.services import REJECT_REASONS
from apps.core.api import ServiceError
from apps.core.pages import staff_required
from apps.crawling.selectors import crawl_jobs_with_relations
from apps.crawling.sources import sources
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import runs_with_relations
from apps.review.api.serializers import ReviewFilterSerializer, ReviewItemSerializer
from apps.review.api.views import ReviewViewSet
from apps.review.selectors import NO_MODEL_MESSAGE, review_items, review_queue, suggesting_version

CHOICES_SHOWN = 50  # recent crawl jobs and plans offered as filters; an older one is typed as ?crawl_job=<id>


def _first_page(request, filters, version) -> dict:
    """The queue's first page, shaped as ``GET /api/v1/review/`` answers it (count, results)."""
    queue = review_queue(filters=filters, version=version)
    images = list(queue[:ReviewViewSet.pagination_class.page_size])  # the API's page 1, which the script reads next
    results = ReviewItemSerializer(review_items(images, version=version), many=True,
                                   context={"request": request}).data
    return {"count": queue.count(), "results": results}


def _filter_choices() -> dict:
    """What the filter bar offers: sources (kinds and crawl sources), recent crawl jobs, runs with a plan,
    and recent finished runs (whose suspect labels can be reviewed)."""
    runs = runs_with_relations()
    return {
        "sources": [*Image.SourceKind.values, *sources.names()],
        "crawl_jobs": list(crawl_jobs_with_relations().order_by("-created_at", "-id")[:CHOICES_SHOWN]),
        "plans": list(runs.exclude(plan={})[:CHOICES_SHOWN]),
        "evaluations": list(runs.filter(status=EvaluationRun.Status.SUCCEEDED)[:CHOICES_SHOWN]),
    }


@staff_required
@ensure_csrf_cookie  # the script posts decisions with the CSRF cookie, whatever else the page renders
def review_page(request):
    asked = {name: value for name, value in request.GET.items() if value != ""}  # an empty field: no filter
    form = ReviewFilterSerializer(data=asked)
    error, queue = "", {"count": 0, "results": []}
    version = suggesting_version()
    if form.is_valid():
        try:
            queue = _first_page(request, form.filters(), version)
        except ServiceError as exc:  # a filter naming a character, crawl job or plan that does not exist
            error = exc.message
    else:
        error = "; ".join(f"{name}: {' '.join(map(str, problems))}" for name, problems in form.errors.items())
    active = {name: value for name, value in (form.validated_data if not error else {}).items() if value is not None}
    return render(request, "review/review.html", {
        "queue": queue, "error": error, "filters": active, "asked": asked,
        "model": version.name if version else None, "no_model": NO_MODEL_MESSAGE,
        # Keys 1–9 pick a reason in the reject picker, in the curation service's order.
        "reasons": [{"code": code, "label": label, "key": str(n)}
                    for n, (code, label) in enumerate(REJECT_REASONS.items(), start=1)],
        **_filter_choices(),
    }, status=400 if error else 200)
