"""A file of URLs, one a line (``#`` comments): a path below the local crawl folder, or an http(s) URL
(relative ones are resolved against the source root, so a mirror or a test server can serve it)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from django.conf import settings

from .base import Candidate, Source
from .http import FetchError, Politeness
from .local_folder import post_id_for, resolve_below

MAX_LIST_BYTES = 5 * 1024 * 1024


class UrlListSource(Source):
    description = "A text file of image URLs (query: its path below KYARA_CRAWL_LOCAL_ROOT, or a URL)"
    politeness = Politeness(rate=2.0, concurrency=2)
    listing = "finite"

    def _read_list(self, query: str) -> str:
        query = query.strip()
        if not query:
            raise FetchError("bad_query", "url_list needs the path or URL of a file of URLs")
        if urlsplit(query).scheme in ("http", "https") or self.root.startswith(("http://", "https://")):
            url = query if urlsplit(query).scheme else urljoin(self.root + "/", query)
            return self.client.get(url, max_bytes=MAX_LIST_BYTES).text()
        path = resolve_below(Path(self.root or settings.KYARA_CRAWL_LOCAL_ROOT), query)
        if not path.is_file():
            raise FetchError("not_found", f"No file {path}")
        return path.read_bytes()[:MAX_LIST_BYTES].decode("utf-8", errors="replace")

    def list(self, query: str, *, before: int | None = None) -> Iterator[list[Candidate]]:
        page: list[Candidate] = []
        for line in self._read_list(query).splitlines():
            url = line.split("#", 1)[0].strip()
            if not url:
                continue
            page.append(Candidate(post_id=post_id_for(url), url=url))
            if len(page) >= self.page_size:
                yield page
                page = []
        if page:
            yield page


def register(registry) -> None:
    registry.register("url_list", UrlListSource)
