"""The Gelbooru ``index.php?page=dapi`` family (XML): gelbooru.com, safebooru.org and mirrors."""
from __future__ import annotations

from collections.abc import Iterator
from xml.etree import ElementTree

from .base import Candidate, Source
from .http import FetchError

# safebooru.org is the "Safebooru" of the original system.
GELBOORU_SITES: dict[str, dict] = {
    "gelbooru": {"root": "https://gelbooru.com", "rate": 1.0, "concurrency": 2},
    "safebooru": {"root": "https://safebooru.org", "rate": 1.0, "concurrency": 2},
}


def parse_posts(content: bytes) -> list[ElementTree.Element]:
    # Python's expat refuses external entities and bounds entity expansion (billion laughs); a DOCTYPE
    # has no business in a listing anyway, so one is refused outright.
    if b"<!DOCTYPE" in content[:2048].upper():
        raise FetchError("bad_listing", "The listing declares a DOCTYPE; refused")
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as exc:
        raise FetchError("bad_listing", f"The listing is not XML: {exc}") from None
    if root.tag == "response" and root.get("success") == "false":
        raise FetchError("bad_listing", f"The site refused the query: {root.get('reason') or root.text}")
    return root.findall("post")


class GelbooruSource(Source):
    description = "Gelbooru dapi (XML), newest first, paged by pid"
    tag_family = "gelbooru"
    listing = "ordered"
    solo_tag = "solo"
    # gelbooru.com speaks the words; safebooru.org and older installs "s" (safe), "q", "e".
    rating_codes = {"general": "general", "safe": "general", "s": "general", "sensitive": "sensitive",
                    "questionable": "questionable", "q": "questionable", "explicit": "explicit", "e": "explicit"}
    settings_schema = {"user_id": "Gelbooru user id", "api_key": "API key of that user"}
    max_pid = 200  # Gelbooru refuses deep pages; beyond it a job resumes with ``id:<N``

    def list(self, query: str, *, before: int | None = None) -> Iterator[list[Candidate]]:
        tags = f"{query} id:<{before}".strip() if before else query
        pid = 0
        while pid <= self.max_pid:
            params = {"page": "dapi", "s": "post", "q": "index", "tags": tags, "limit": self.page_size, "pid": pid}
            if self.credentials.get("user_id") and self.credentials.get("api_key"):
                params.update(user_id=self.credentials["user_id"], api_key=self.credentials["api_key"])
            response = self.client.get(f"{self.root}/index.php", params=params)
            posts = parse_posts(response.content)
            if not posts:
                return
            yield [c for c in (self._candidate(post.attrib) for post in posts) if c]
            if len(posts) < self.page_size:
                return
            pid += 1

    def _candidate(self, post: dict) -> Candidate | None:
        return self.booru_candidate(
            post_id=post.get("id"), url=post.get("file_url"), md5=post.get("md5"), tags=post.get("tags"),
            width=post.get("width"), height=post.get("height"), rating=post.get("rating"),
        )

def register(registry) -> None:
    for name, site in GELBOORU_SITES.items():
        registry.register(name, GelbooruSource.for_site(**site))
