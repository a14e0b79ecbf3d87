"""Source adapters: the registry, the built-ins, plugins from the entry point group ``kyara.sources``."""
from __future__ import annotations

import threading

from django.conf import settings

from apps.core.plugins import load_entry_points
from apps.core.registry import Registry

from .base import Candidate, Source  # noqa: F401
from .http import Cancelled, FetchError, Politeness  # noqa: F401

ENTRY_POINT_GROUP = "kyara.sources"

sources: Registry = Registry("source")


def register_builtin_sources() -> None:
    from . import booru_danbooru, booru_gelbooru, local_folder, url_list, waifu_pics

    for module in (booru_danbooru, booru_gelbooru, waifu_pics, local_folder, url_list):
        module.register(sources)


def load_source_plugins() -> list[str]:
    return load_entry_points(ENTRY_POINT_GROUP, sources)


def build_source(name: str, *, stop: threading.Event | None = None) -> Source:
    """An adapter instance for ``name``, with its root, credentials and politeness from settings."""
    factory = sources.get(name)
    return factory(
        name=name,
        root=settings.KYARA_SOURCE_ROOTS.get(name),
        stop=stop,
        credentials=settings.KYARA_CRAWL_CREDENTIALS.get(name),
    )
