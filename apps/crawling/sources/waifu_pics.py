"""Waifu.pics: random images of a category. They carry no character label (unlabelled pool only)."""
from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlsplit

from .base import Candidate, Source
from .http import FetchError, Politeness

CATEGORIES = {"waifu", "neko", "shinobu", "megumin", "cuddle", "smile", "happy", "wink", "blush"}


class WaifuPicsSource(Source):
    description = "waifu.pics /many/sfw/<category> (random, 30 per call, no labels)"
    default_root = "https://api.waifu.pics"
    politeness = Politeness(rate=1.0, concurrency=2)
    labelled = False
    listing = "endless"
    default_query_text = "waifu"
    exclude_window = 300  # the API accepts a list of files not to return again

    def list(self, query: str, *, before: int | None = None) -> Iterator[list[Candidate]]:
        category = (query or self.default_query_text).strip().lower()
        if category.startswith("sfw/"):
            category = category[4:]
        if "/" in category or not category:
            raise FetchError("bad_query", f"waifu_pics takes one sfw category (e.g. waifu), not {query!r}")
        recent: deque[str] = deque(maxlen=self.exclude_window)
        while True:
            response = self.client.request("POST", f"{self.root}/many/sfw/{category}", json={"exclude": list(recent)})
            try:
                files = json.loads(response.content).get("files") or []
            except (ValueError, AttributeError):
                raise FetchError("bad_listing", f"waifu_pics: the listing is not JSON ({response.url})") from None
            if not files:
                return
            page = []
            for url in files:
                if not isinstance(url, str):
                    continue
                recent.append(url)
                page.append(Candidate(post_id=urlsplit(url).path.rsplit("/", 1)[-1][:100] or url[-100:], url=url,
                                      tags=(category,)))
            yield page


def register(registry) -> None:
    registry.register("waifu_pics", WaifuPicsSource)
