"""A fake booru world on 127.0.0.1 that speaks every built-in source's protocol, with faults.

The same posts are served as Danbooru JSON (/posts.json), Gelbooru XML (/index.php), Waifu.pics
(/many/sfw/<category>), a file of URLs (/urls.txt) and files in a folder, so one contract test runs
over every adapter. Faults: 429 with Retry-After, a 500 then success, a timeout then success, a body
shorter than its Content-Length, a truncated file, a redirect to a private address, tiny images (and
one whose listing lies about its size), the same file under two post ids, posts listed twice within
a page and across pages, and an endless listing; where a test asks for them, group pictures (posts not
tagged solo) and a near-duplicate ("resized": the newest post's picture, resized).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import quoteattr

import pytest

from tests.conftest import make_image_bytes, near_copy_bytes, running_qcluster

BOORU_SOURCES = ("danbooru", "safebooru_donmai", "gelbooru", "safebooru")
TAG = "hu_tao"
PRIVATE_TARGET = "http://10.255.255.1/private.png"


@dataclass
class Post:
    id: int
    kind: str = "ok"
    copy_of: int | None = None
    solo: bool = True  # tagged solo (one character); False: a group picture

    @property
    def tags(self) -> str:
        return f"{TAG} 1girl solo" if self.solo else f"{TAG} 2girls multiple_girls"

    @property
    def seed(self) -> int:
        return self.copy_of if self.copy_of is not None else self.id


# The standard world, newest first. Accepted by every adapter: the 11 "ok" and the 3 that fail once.
STANDARD_KINDS = [
    "ok", "ok", "r429", "ok", "flaky500", "ok", "slow", "truncated", "ok", "truncated_nolen",
    "redirect_private", "tiny", "ok", "tiny_lying", "copy", "ok", "ok", "ok", "ok", "ok",
]
STANDARD_ACCEPTED = STANDARD_KINDS.count("ok") + 3


@dataclass
class World:
    posts: list[Post] = field(default_factory=list)
    endless: bool = False  # listing never ends: fresh posts forever, ids going down
    endless_kind: str = "ok"
    image_delay: float = 0.0  # seconds before every image response
    within_page_dup: bool = True
    across_page_dup: bool = True
    waifu_batch: int = 5
    listing_429: int = 0  # the first N listing requests (/posts.json) get a 429 with Retry-After
    retry_after: str = "1"  # the Retry-After header of every 429
    picture: Callable[[Post], bytes] | None = None  # what an "ok" post shows, where a test needs particular pictures
    root: str = ""
    hits: Counter = field(default_factory=Counter)
    hit_times: dict = field(default_factory=dict)
    user_agents: set = field(default_factory=set)
    params_seen: list = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _images: dict = field(default_factory=dict)

    # --- content -------------------------------------------------------------------------------------
    def image(self, post: Post) -> bytes:
        key = (post.seed, post.kind)
        if key not in self._images:
            if post.kind == "ok" and self.picture is not None:
                self._images[key] = self.picture(post)
            elif post.kind == "resized":  # a near-duplicate: the picture of the post it copies, resized
                self._images[key] = near_copy_bytes(make_image_bytes(post.seed), fmt="PNG")
            else:
                size = (40, 40) if post.kind in ("tiny", "tiny_lying") else (96, 96)
                self._images[key] = make_image_bytes(post.seed, size=size)
        return self._images[key]

    def md5(self, post: Post) -> str:
        return hashlib.md5(self.image(post)).hexdigest()

    def post(self, post_id: int) -> Post:
        for post in self.posts:
            if post.id == post_id:
                return post
        if self.endless:
            return Post(post_id, self.endless_kind)
        raise KeyError(post_id)

    def ordered(self, *, below: int | None = None, offset: int = 0, limit: int = 5) -> list[Post]:
        """A slice of the listing (newest first), with the repeats a live site shows."""
        if self.endless:
            top = below - 1 if below else 1_000_000 - offset
            page = [Post(top - i, self.endless_kind) for i in range(limit)]
        else:
            posts = [p for p in self.posts if below is None or p.id < below]
            page = posts[offset:offset + limit]
        if self.across_page_dup and (below or offset) and page:
            # New posts arrived between two requests: the last one of the previous page shows again.
            previous = [p for p in self.posts if p.id > page[0].id]
            if previous:
                page = [previous[-1], *page]
        if self.within_page_dup and len(page) > 2:
            page = [*page[:2], page[1], *page[2:]]
        return page

    def url(self, post: Post) -> str:
        return f"{self.root}/img/{post.id}.png"

    def danbooru(self, post: Post) -> dict:
        w = 500 if post.kind == "tiny_lying" else 40 if post.kind == "tiny" else 96
        return {"id": post.id, "md5": self.md5(post), "file_url": self.url(post), "tag_string": post.tags,
                "image_width": w, "image_height": w, "rating": "q" if self.questionable(post) else "g",
                "file_ext": "png"}

    @staticmethod
    def questionable(post: Post) -> bool:
        """A few good posts carry a stronger rating (only a rating filter refuses them)."""
        return post.kind == "ok" and post.id % 5 == 0

    def gelbooru_xml(self, posts: list[Post]) -> bytes:
        rows = []
        for post in posts:
            d = self.danbooru(post)
            rows.append(f'<post id="{post.id}" md5="{d["md5"]}" file_url={quoteattr(d["file_url"])} '
                        f'tags=" {post.tags} " width="{d["image_width"]}" height="{d["image_height"]}" '
                        f'rating="{"questionable" if self.questionable(post) else "s"}"/>')
        return f'<?xml version="1.0" encoding="UTF-8"?><posts count="{len(self.posts)}" offset="0">' \
               f'{"".join(rows)}</posts>'.encode()

    def all_urls(self) -> list[str]:
        urls = [self.url(p) for p in self.posts]
        return [*urls[:2], urls[1], *urls[2:]] if self.within_page_dup else urls

    def write_folder(self, folder: Path) -> None:
        """The same posts as files (network faults do not apply; broken files do)."""
        folder.mkdir(parents=True, exist_ok=True)
        for post in self.posts:
            if post.kind == "redirect_private":
                continue  # no such thing on a disk
            if post.kind in ("truncated", "truncated_nolen"):
                data = self.image(post)[: len(self.image(post)) // 2]
            else:
                data = self.image(post)
            (folder / f"{post.id:06d}.png").write_bytes(data)


class Handler(BaseHTTPRequestHandler):
    world: World
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body meet the client's delayed ACK (+40 ms)

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, *, length: int | None = None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if length is not False:
            self.send_header("Content-Length", str(len(body) if length is None else length))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if length is not None:
            self.close_connection = True

    def do_POST(self):
        self.do_GET()

    def do_GET(self):  # noqa: C901 - one dispatcher for a fake site
        world = self.world
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with world.lock:
            world.hits[parts.path] += 1
            hit = world.hits[parts.path]
            world.hit_times.setdefault(parts.path, []).append(time.monotonic())
            world.user_agents.add(self.headers.get("User-Agent", ""))
            world.params_seen.append(params)
            world.active += 1
            world.max_active = max(world.max_active, world.active)
        try:
            self._dispatch(parts.path, params, hit)
        finally:
            with world.lock:
                world.active -= 1

    def _dispatch(self, path: str, params: dict, hit: int):
        world = self.world
        limit = int(params.get("limit", 5))
        if path == "/posts.json":
            if hit <= world.listing_429:
                return self._send(429, b"slow down", {"Retry-After": world.retry_after})
            page = params.get("page", "1")
            if page.startswith("b"):
                posts = world.ordered(below=int(page[1:]), limit=limit)
            else:
                posts = world.ordered(offset=(int(page) - 1) * limit, limit=limit)
            return self._send(200, json.dumps([world.danbooru(p) for p in posts]).encode(),
                              {"Content-Type": "application/json"})
        if path == "/index.php":
            below = None
            for tag in params.get("tags", "").split():
                if tag.startswith("id:<"):
                    below = int(tag[4:])
            posts = world.ordered(below=below, offset=int(params.get("pid", 0)) * limit, limit=limit)
            return self._send(200, world.gelbooru_xml(posts), {"Content-Type": "text/xml"})
        if path.startswith("/many/sfw/"):
            length = int(self.headers.get("Content-Length") or 0)
            exclude = set(json.loads(self.rfile.read(length) or b"{}").get("exclude", []))
            if world.endless:  # random images forever: always fresh ones
                with world.lock:
                    start = 900_000 - world.hits[path] * world.waifu_batch
                urls = [world.url(Post(start - i)) for i in range(world.waifu_batch)]
            else:
                urls = [u for u in world.all_urls() if u not in exclude][: world.waifu_batch] or world.all_urls()[:5]
            return self._send(200, json.dumps({"files": urls}).encode(), {"Content-Type": "application/json"})
        if path == "/urls.txt":
            body = "# test list\n" + "\n".join(world.all_urls()) + "\nftp://example.invalid/x.png\n"
            return self._send(200, body.encode(), {"Content-Type": "text/plain"})
        if path.startswith("/img/"):
            return self._image(int(path.rsplit("/", 1)[-1].split(".")[0]), hit)
        return self._send(404, b"not found")

    def _image(self, post_id: int, hit: int):
        world = self.world
        try:
            post = world.post(post_id)
        except KeyError:
            return self._send(404, b"no such post")
        if world.image_delay:
            time.sleep(world.image_delay)
        data = world.image(post)
        kind = post.kind
        if kind == "r429" and hit == 1:
            return self._send(429, b"slow down", {"Retry-After": world.retry_after})
        if kind == "flaky500" and hit == 1:
            return self._send(500, b"oops")
        if kind == "slow" and hit == 1:
            time.sleep(1.0)  # past the client's read timeout
        if kind == "redirect_private":
            return self._send(302, b"", {"Location": PRIVATE_TARGET})
        if kind == "truncated":
            return self._send(200, data[: len(data) // 2], {"Content-Type": "image/png"}, length=len(data))
        if kind == "truncated_nolen":
            return self._send(200, data[: len(data) // 2], {"Content-Type": "image/png"}, length=False)
        # The Content-Type lies on purpose: content is sniffed, never trusted from headers.
        return self._send(200, data, {"Content-Type": "text/html"})


def standard_posts(kinds=STANDARD_KINDS, *, top: int = 120) -> list[Post]:
    posts = []
    for index, kind in enumerate(kinds):
        post_id = top - index
        if kind in ("copy", "resized"):
            posts.append(Post(post_id, kind, copy_of=top))  # the same file as the newest post, or a resized copy
        else:
            posts.append(Post(post_id, kind))
    return posts


@pytest.fixture
def world():
    """A running fake site; ``world.root`` is its URL. Stopped after the test."""
    state = World(posts=standard_posts())
    handler = type("BoundHandler", (Handler,), {"world": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.root = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def crawl_environment(world: World, local_root: Path) -> dict:
    """Settings (as env-style values) that point every source at the fake world, politely but fast."""
    from apps.crawling.sources import sources

    roots = {name: world.root for name in sources.names()}
    roots["local_folder"] = str(local_root)
    return {
        "KYARA_SOURCE_ROOTS": roots,
        "KYARA_CRAWL_ALLOW_PRIVATE": ["127.0.0.1/32"],
        "KYARA_CRAWL_POLITENESS": {name: {"rate": 500, "concurrency": 4} for name in sources.names()},
        "KYARA_CRAWL_JITTER": 0.0,
        "KYARA_CRAWL_RETRIES": 2,
        "KYARA_CRAWL_BACKOFF": 0.01,
        "KYARA_CRAWL_MAX_RETRY_AFTER": 0.3,
        "KYARA_CRAWL_CONNECT_TIMEOUT": 2.0,
        "KYARA_CRAWL_READ_TIMEOUT": 0.4,
        "KYARA_CRAWL_STOP_AFTER_KNOWN": 3,
        "KYARA_CRAWL_PAGE_SIZE": 5,
        "KYARA_CRAWL_MAX_PAGES": 20,
        "KYARA_CRAWL_THREADS": 4,
        "KYARA_CRAWL_LOCAL_ROOT": local_root,
    }


@pytest.fixture
def crawl_settings(settings, world, tmp_path):
    """Point every source at the fake world (settings override); returns the local crawl folder."""
    local_root = tmp_path / "incoming"
    local_root.mkdir()
    for key, value in crawl_environment(world, local_root).items():
        setattr(settings, key, value)
    return local_root


@pytest.fixture
def character(db):
    from apps.characters.models import Character, Series

    series = Series.objects.create(slug="genshin-impact", name="Genshin Impact")
    return Character.objects.create(series=series, slug="hu-tao", name="Hu Tao",
                                    booru_tags={"danbooru": TAG, "gelbooru": TAG})


def crawl_worker_env(world: World, local_root: Path) -> dict[str, str]:
    """``crawl_environment`` as a child process's environment variables."""
    env = {key: value if isinstance(value, str) else json.dumps(value, default=str)
           for key, value in crawl_environment(world, local_root).items()}
    env["KYARA_CRAWL_ALLOW_PRIVATE"] = "127.0.0.1/32"
    env["KYARA_CRAWL_LOCAL_ROOT"] = str(local_root)
    return env


@pytest.fixture
def crawl_qcluster(transactional_db, world, tmp_path):
    """A real ``manage.py qcluster`` on the test database whose settings point at the fake world."""
    local_root = tmp_path / "incoming"
    local_root.mkdir(exist_ok=True)
    with running_qcluster("qcluster-crawl.log", **crawl_worker_env(world, local_root)) as proc:
        yield proc
