"""Reads the pages need across apps. Each app's own selectors do the work; these put them together."""
from __future__ import annotations

from django.urls import NoReverseMatch, reverse

from apps.characters.models import Character, DatasetVersion, Image, ImportJob
from apps.characters.selectors import dataset_stats, image_urls, latest_dataset_version, trainable_images
from apps.crawling.models import CrawlJob
from apps.crawling.selectors import crawl_jobs_with_relations
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import alias_comparison, runs_with_relations
from apps.inference.models import ModelAlias, ModelVersion
from apps.training.models import TrainingJob

WEAKEST = 5
REVIEW_PATH = "/ui/review/"


def home_summary() -> dict:
    stats = dataset_stats()
    default = ModelAlias.objects.select_related("version").filter(name="default").first()
    return {
        "images": stats["images"],
        "characters": stats["characters"],
        "latest_version": stats["latest_version"],
        "totals": stats["totals"],
        "active_crawls": CrawlJob.objects.filter(status__in=CrawlJob.ACTIVE).count(),
        "recent_crawls": list(crawl_jobs_with_relations().order_by("-created_at", "-id")[:5]),
        "active_trainings": TrainingJob.objects.filter(status__in=TrainingJob.ACTIVE).count(),
        "recent_trainings": list(TrainingJob.objects.select_related("dataset_version").order_by("-created_at", "-id")[:5]),
        "aliases": list(ModelAlias.objects.select_related("version").order_by("name")),
        "guide": None if default else first_run_guide(stats),
        "loop": loop_status(stats, default.version) if default else None,
    }


def first_run_guide(stats: dict) -> dict:
    """The four steps from an empty installation to a served model, each enabled once the one before is done:
    import a zip, freeze a version, train a model, promote it to ``default`` (its evaluation follows training)."""
    latest = latest_dataset_version()
    model = ModelVersion.objects.order_by("-created_at", "-id").first()
    evaluation = runs_with_relations().filter(model_version=model).first() if model else None
    training = TrainingJob.objects.select_related("model_version").order_by("-created_at", "-id").first()
    trainable = trainable_images().exists()
    steps = {
        "import": {"done": stats["images"] > 0, "enabled": True,
                   "last": ImportJob.objects.order_by("-created_at", "-id").first()},
        "freeze": {"done": latest is not None, "enabled": trainable, "version": latest},
        "train": {"done": model is not None, "enabled": latest is not None, "job": training},
        "promote": {"done": False, "enabled": model is not None, "model": model, "evaluation": evaluation},
    }
    return {"steps": steps, "approved": stats["totals"].get("approved", 0)}


def review_url() -> str:
    """The review page (the review app's, by its name once it is there)."""
    try:
        return reverse("review:page")
    except NoReverseMatch:
        return REVIEW_PATH


def loop_status(stats: dict, default: ModelVersion) -> dict:
    """Where the improvement loop stands: images waiting for review, what the latest version lacks, running jobs,
    the default model with its latest evaluation and weakest characters, and a newer model that beats it."""
    latest = latest_dataset_version()
    evaluations = runs_with_relations().filter(model_version=default, status=EvaluationRun.Status.SUCCEEDED)
    evaluation = evaluations.filter(split="test").first() or evaluations.first()  # test: the honest numbers
    weakest = []
    if evaluation is not None:
        rows = (evaluation.characters.filter(support__gt=0, accuracy__isnull=False).select_related("character")
                .order_by("accuracy", "label")[:WEAKEST])
        weakest = [{"character": row.label, "name": row.character.name if row.character else row.label,
                    "accuracy": row.accuracy, "support": row.support, "tier": row.tier_name} for row in rows]
    challenger = (runs_with_relations().filter(status=EvaluationRun.Status.SUCCEEDED)
                  .exclude(model_version=default).first())
    comparison = alias_comparison(challenger) if challenger is not None else None
    return {
        "pending": stats["totals"].get("pending", 0),
        "unlabelled": sum(stats["unlabelled"].values()),
        "review_url": review_url(),
        "latest": latest,
        "not_in_latest": trainable_images().exclude(dataset_items__version=latest).count() if latest else 0,
        "versions": DatasetVersion.objects.count(),
        "running": {
            "imports": ImportJob.objects.filter(status__in=ImportJob.ACTIVE).count(),
            "crawls": CrawlJob.objects.filter(status__in=CrawlJob.ACTIVE).count(),
            "trainings": TrainingJob.objects.filter(status__in=TrainingJob.ACTIVE).count(),
            "evaluations": EvaluationRun.objects.filter(status__in=EvaluationRun.ACTIVE).count(),
        },
        "default": default,
        "evaluation": evaluation,
        "weakest": weakest,
        "challenger": challenger if comparison and comparison["beats"] else None,
        "challenger_reason": comparison["reason"] if comparison and comparison["beats"] else "",
    }


def character_page(character: Character, *, page_size: int = 60, page: int = 1) -> dict:
    """A character's pictures (any status) with its crawl jobs."""
    images = Image.objects.filter(character=character).order_by("-id")
    total = images.count()
    page = max(1, page)
    rows = [dict(image_urls(image), status=image.status, source=image.source_site or image.source_kind)
            for image in images[(page - 1) * page_size: page * page_size]]
    return {
        "images": rows, "total": total, "page": page, "has_next": page * page_size < total,
        "crawls": list(crawl_jobs_with_relations().filter(character=character).order_by("-created_at", "-id")[:20]),
    }
