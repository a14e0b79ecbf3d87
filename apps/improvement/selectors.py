"""Reads of improvement cycles: what a page, the API and ``manage.py improve --json`` show of them."""
from __future__ import annotations

from django.db.models import QuerySet
from django.urls import NoReverseMatch, reverse

from .models import Cycle, Stage
from .stages import pending_images, review_links

# A stage's link kind → (page, API) URL names; the first that resolves is the link's url.
LINK_URLS = {
    "crawl_job": ("crawling:detail", "crawljob-detail"),
    "training_job": ("training:detail", "training-job-detail"),
    "evaluation": ("evaluation:detail", "evaluation-detail"),
    "dataset_version": (None, "datasetversion-detail"),
    "model_version": (None, "modelversion-detail"),
    "review": ("review:page", None),  # the queue narrowed to a crawl job's images
}


def cycles_with_relations() -> QuerySet[Cycle]:
    return Cycle.objects.prefetch_related("crawl_jobs").select_related("from_evaluation__model_version", "from_evaluation__dataset_version",
                                       "dataset_version", "training_job__model_version", "baseline_model",
                                       "requested_by")


def link_url(kind: str, pk: int | None) -> str | None:
    """The page of what a stage links to (the API resource where it has no page), or None."""
    for name in LINK_URLS.get(kind, ()):
        if name is None or pk is None:
            continue
        try:
            return reverse(name, args=[pk]) if kind != "review" else f"{reverse(name)}?crawl_job={pk}"
        except NoReverseMatch:
            continue
    return None


def with_urls(links: list[dict]) -> list[dict]:
    return [{**item, "url": link_url(item["kind"], item["id"])} for item in links]


def stages_with_urls(cycle: Cycle) -> list[dict]:
    return [{**record, "links": with_urls(record["links"])} for record in cycle.stages]


def waiting_images(cycle: Cycle) -> int | None:
    """How many images of this cycle's crawls are pending now, while the cycle is at its review or wait stage;
    None at the others (before, nothing was crawled; after, what is still pending stays out of the new version
    and the cycle no longer waits for it)."""
    if cycle.stage not in (Stage.REVIEW, Stage.WAIT) or not any(tier["jobs"] for tier in cycle.plan.get("tiers", [])):
        return None
    return pending_images(cycle).count()


def review_queue_links(cycle: Cycle) -> list[dict]:
    """The review queue per crawl job that left images pending, counted now (a stage's own links say what its
    last step counted, up to a scheduled advance ago)."""
    return with_urls(review_links(cycle))
