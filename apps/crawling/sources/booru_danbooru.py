"""The Danbooru API family (``/posts.json``): danbooru.donmai.us, safebooru.donmai.us and mirrors."""
from __future__ import annotations

import json
from collections.abc import Iterator

from .base import Candidate, Source
from .http import FetchError

# A compatible site is one entry here. Danbooru asks for at most 10 reads/s; we stay well below.
DANBOORU_SITES: dict[str, dict] = {
    "danbooru": {"root": "https://danbooru.donmai.us", "rate": 2.0, "concurrency": 2},
    "safebooru_donmai": {"root": "https://safebooru.donmai.us", "rate": 2.0, "concurrency": 2},
}


class DanbooruSource(Source):
    description = "Danbooru API (posts.json), newest first, paged by id"
    tag_family = "danbooru"
    listing = "ordered"
    solo_tag = "solo"
    rating_codes = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}
    settings_schema = {"login": "Danbooru user name", "api_key": "API key of that user"}

    def _params(self, query: str, page: str) -> dict:
        params = {"tags": query, "limit": self.page_size, "page": page}
        if self.credentials.get("login") and self.credentials.get("api_key"):
            params.update(login=self.credentials["login"], api_key=self.credentials["api_key"])
        return params

    def list(self, query: str, *, before: int | None = None) -> Iterator[list[Candidate]]:
        page = f"b{before}" if before else "1"
        lowest: int | None = None
        while True:
            response = self.client.get(f"{self.root}/posts.json", params=self._params(query, page))
            try:
                posts = json.loads(response.content)
            except ValueError:
                raise FetchError("bad_listing", f"{self.name}: the listing is not JSON ({response.url})") from None
            if not isinstance(posts, list) or not posts:
                return
            candidates = [c for c in (self._candidate(post) for post in posts if isinstance(post, dict)) if c]
            yield candidates
            ids = [c.numeric_id for c in candidates if c.numeric_id is not None]
            if not ids or (lowest is not None and min(ids) >= lowest):
                return  # no progress: never loop on a listing that repeats itself
            lowest = min(ids)
            page = f"b{lowest}"

    def _candidate(self, post: dict) -> Candidate | None:
        return self.booru_candidate(
            post_id=post.get("id"), url=post.get("file_url") or post.get("large_file_url"), md5=post.get("md5"),
            tags=post.get("tag_string"), width=post.get("image_width"), height=post.get("image_height"),
            rating=post.get("rating"),
        )

def register(registry) -> None:
    for name, site in DANBOORU_SITES.items():
        registry.register(name, DanbooruSource.for_site(**site))
