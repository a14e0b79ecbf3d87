"""Reads the pages need across apps. Each app's own selectors do the work; these put them together."""
from __future__ import annotations

from apps.characters.models import Character, Image
from apps.characters.selectors import dataset_stats, image_urls
from apps.crawling.models import CrawlJob
from apps.crawling.selectors import crawl_jobs_with_relations
from apps.inference.models import ModelAlias
from apps.training.models import TrainingJob


def home_summary() -> dict:
    stats = dataset_stats()
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
