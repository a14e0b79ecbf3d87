"""Reads of the crawling app that need more than one query."""
from __future__ import annotations

from django.db.models import QuerySet

from apps.core.plugins import plugin_failures

from .models import CrawlJob
from .sources import ENTRY_POINT_GROUP, build_source, sources


def crawl_jobs_with_relations() -> QuerySet[CrawlJob]:
    return CrawlJob.objects.select_related("character__series", "requested_by")


def source_registry_snapshot() -> list[dict]:
    """Every registered source as the API shows it, plus the plugins that failed to load."""
    rows = []
    for name in sources.names():
        adapter = build_source(name)
        rows.append({**adapter.describe(), "origin": sources.origin(name), "error": ""})
        adapter.close()
    for failure in plugin_failures():
        if failure.group == ENTRY_POINT_GROUP:
            rows.append({"name": failure.name, "origin": f"plugin {failure.target}", "error": failure.error})
    return rows
