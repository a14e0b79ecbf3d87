"""The source adapter contract: declare settings and politeness, ``list`` candidates, ``fetch`` one.

Listing comes first and carries what the site says about a post (id, file url, md5, tags, size,
rating), so the job can skip known files and tiny images before any download. A plugin subclasses
``Source`` and declares an entry point in the group ``kyara.sources``.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import urljoin

from django.conf import settings

from .http import HttpClient, Politeness

# Content ratings, mildest first; every family's own codes map onto these (unknown: "").
RATING_LEVELS = ("general", "sensitive", "questionable", "explicit")


def rating_allowed(rating: str, max_rating: str) -> bool:
    """Whether a candidate of ``rating`` may be fetched under ``max_rating`` ("" allows everything; an
    unknown rating is allowed, as the site did not say)."""
    if not max_rating or rating not in RATING_LEVELS:
        return True
    return RATING_LEVELS.index(rating) <= RATING_LEVELS.index(max_rating)


@dataclass(frozen=True)
class Candidate:
    """One post a listing offered; ``post_id`` is unique within its source."""

    post_id: str
    url: str
    md5: str = ""
    tags: tuple[str, ...] = ()
    width: int | None = None
    height: int | None = None
    rating: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def numeric_id(self) -> int | None:
        return int(self.post_id) if self.post_id.isdigit() else None


Listing = Literal["ordered", "endless", "finite"]

# The checks of a crawl, in order (names in apps.crawling.steps.crawl_steps): before download, then through the
# ingest, then after the images are stored. A source may drop, add or reorder the optional ones.
DEFAULT_STEPS: tuple[str, ...] = (
    "known", "has_file", "min_side", "rating", "solo",
    "decode", "exact_duplicate", "near_duplicate", "approve",
    "suggest",
)


class Source:
    """Base class of every adapter. Subclasses set the class attributes and implement ``list``.

    ``listing`` says how a rerun finds only new posts:
    - ``ordered``: newest first with numeric ids and a way to list below an id (``before``); the job
      keeps a cursor of the contiguous block it has seen and jumps below it.
    - ``endless``: random or unbounded (Waifu.pics); a run stops after N consecutive known posts.
    - ``finite``: a folder or a file of URLs; everything is listed, known files skipped before reading.
    """

    default_root: ClassVar[str] = ""
    politeness: Politeness = Politeness()
    # Keys a site accepts in KYARA_CRAWL_CREDENTIALS[name], with what each one is.
    settings_schema: ClassVar[dict[str, str]] = {}
    labelled: ClassVar[bool] = True  # False: images carry no character label (unlabelled pool only)
    tag_family: ClassVar[str] = ""  # key of Character.booru_tags used for the default query
    listing: ClassVar[Listing] = "ordered"
    default_query_text: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # The site's rating codes → RATING_LEVELS; a family sets its own.
    rating_codes: ClassVar[dict[str, str]] = {level: level for level in RATING_LEVELS}
    steps: ClassVar[tuple[str, ...]] = DEFAULT_STEPS
    # The tag of a single-character post ("" where posts carry no such tags: the solo option is ignored), and
    # whether a job that does not say (CrawlJob.solo empty) asks for it; collection plans ask for it.
    solo_tag: ClassVar[str] = ""
    solo_default: ClassVar[bool] = False

    def __init__(
        self,
        *,
        name: str,
        root: str | None = None,
        stop: threading.Event | None = None,
        credentials: dict[str, str] | None = None,
        page_size: int | None = None,
        site_root: str | None = None,
        politeness: Politeness | None = None,
    ) -> None:
        self.name = name
        self.root = (root or site_root or self.default_root).rstrip("/")
        self.stop = stop or threading.Event()
        self.credentials = dict(credentials or {})
        self.page_size = page_size or settings.KYARA_CRAWL_PAGE_SIZE
        base = politeness or type(self).politeness
        self.politeness = base.merged(settings.KYARA_CRAWL_POLITENESS.get(name))
        self.client = HttpClient.from_settings(politeness=self.politeness, stop=self.stop)

    @classmethod
    def for_site(cls, *, root: str, rate: float, concurrency: int) -> functools.partial:
        """A factory for one entry of a site table: a compatible site is data, not a class."""
        return functools.partial(cls, site_root=root, politeness=Politeness(rate=rate, concurrency=concurrency))

    # --- the contract ------------------------------------------------------------------------------
    def default_query(self, character) -> str:
        """The character's stored tags for this site (by source name, then by family), else ''."""
        if character is None:
            return self.default_query_text
        tags = character.booru_tags or {}
        return str(tags.get(self.name) or tags.get(self.tag_family) or "").strip()

    def list(self, query: str, *, before: int | None = None) -> Iterator[list[Candidate]]:
        """Pages of candidates, newest first where the site can; ``before``: only ids below it."""
        raise NotImplementedError

    def booru_candidate(self, *, post_id: Any, url: str | None, md5: Any, tags: Any, width: Any, height: Any,
                        rating: Any) -> Candidate | None:
        """A candidate from a booru post's fields (any family): ids checked, URLs made absolute."""
        number = to_int(post_id)
        if number is None:
            return None
        url = url or ""
        if url.startswith("//"):
            url = "https:" + url
        return Candidate(
            post_id=str(number),
            url=urljoin(self.root + "/", url) if url else "",
            md5=str(md5 or "").lower(),
            tags=split_tags(tags),
            width=to_int(width),
            height=to_int(height),
            rating=self.rating_codes.get(str(rating or "").strip().lower(), ""),
        )

    def fetch(self, candidate: Candidate) -> bytes:
        """The file's bytes. Never trusted by type: the ingest service sniffs and decodes them."""
        return self.client.get(candidate.url).content

    def close(self) -> None:
        self.client.close()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": self.root,
            "description": self.description,
            "labelled": self.labelled,
            "tag_family": self.tag_family,
            "listing": self.listing,
            "politeness": {"rate": self.politeness.rate, "concurrency": self.politeness.concurrency},
            "settings_schema": self.settings_schema,
            "steps": list(self.steps),
            "solo_tag": self.solo_tag,
            "solo_default": self.solo_default,
        }


def split_tags(value: str | list | None) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, list):
        return tuple(str(tag) for tag in value)
    return tuple(value.split())


def to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
