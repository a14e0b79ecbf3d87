"""The one way a crawl touches the network: polite, bounded and refusing hostile URLs.

Politeness lives here once for every adapter: a per-host rate limit with jitter and a cap on
concurrent requests, 429/503 with Retry-After honoured, exponential backoff with bounded retries,
connect and read timeouts, a User-Agent with a contact address. Safety too: http(s) only, every host
(and every redirect hop) resolved and refused when private, loopback, link-local or reserved, a cap
on bytes per response. Every failure is a ``FetchError`` with a ``kind`` the job counts.
"""
from __future__ import annotations

import email.utils
import ipaddress
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from apps.core.redaction import redact_secrets

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5


class FetchError(Exception):
    """A request that did not produce a usable body; ``kind`` is the counter it goes to."""

    def __init__(self, kind: str, message: str) -> None:
        message = redact_secrets(message)  # it quotes URLs, and a listing URL may carry the account's key
        super().__init__(message)
        self.kind = kind
        self.message = message


class Cancelled(Exception):
    """The job was asked to stop; raised instead of starting or waiting for a request."""


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        message = redact_secrets(message)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Politeness:
    """What a source declares about itself: requests per second and simultaneous requests per host."""

    rate: float = 1.0
    concurrency: int = 2

    def merged(self, overrides: dict | None) -> Politeness:
        if not overrides:
            return self
        return Politeness(
            rate=float(overrides.get("rate", self.rate)), concurrency=int(overrides.get("concurrency", self.concurrency))
        )


@dataclass
class Response:
    url: str  # after redirects
    status: int
    headers: dict[str, str]
    content: bytes

    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class HostGate:
    """Spaces requests to one host (rate with jitter) and caps how many run at once."""

    def __init__(self, rate: float, concurrency: int, jitter: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.jitter = max(jitter, 0.0)
        self._slots = threading.BoundedSemaphore(max(concurrency, 1))
        self._lock = threading.Lock()
        self._next = 0.0

    def pause_until(self, moment: float) -> None:
        """A 429 or 503 with Retry-After holds back every request to the host, not just the one."""
        with self._lock:
            self._next = max(self._next, moment)

    def acquire(self, stop: threading.Event) -> None:
        while not self._slots.acquire(timeout=0.2):
            if stop.is_set():
                raise Cancelled("cancelled while waiting for a connection slot")
        try:
            with self._lock:
                now = time.monotonic()
                slot = max(now, self._next)
                self._next = slot + self.interval * (1.0 + random.random() * self.jitter)
            _sleep(slot - time.monotonic(), stop)
        except BaseException:
            self._slots.release()
            raise

    def release(self) -> None:
        self._slots.release()


_gates: dict[tuple[str, float, int, float], HostGate] = {}
_gates_lock = threading.Lock()


def host_gate(host: str, politeness: Politeness, jitter: float) -> HostGate:
    """One gate per host per process, so two jobs on the same site share its politeness."""
    key = (host, politeness.rate, politeness.concurrency, jitter)
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = HostGate(politeness.rate, politeness.concurrency, jitter)
        return gate


def _sleep(seconds: float, stop: threading.Event) -> None:
    if seconds > 0 and stop.wait(seconds):
        raise Cancelled("cancelled while waiting")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def _allowed_networks() -> bool | list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    allow = settings.KYARA_CRAWL_ALLOW_PRIVATE
    if isinstance(allow, bool):
        return allow
    return [ipaddress.ip_network(net, strict=False) for net in allow]


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def _address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow) -> bool:
    if _is_public(ip) or allow is True:
        return True
    return isinstance(allow, list) and any(ip.version == net.version and ip in net for net in allow)


def _refusal(url: str, host: str, ip) -> FetchError:
    return FetchError(
        "private_address",
        f"Refused {url}: {host} resolves to {ip}, a private, loopback, link-local or reserved address "
        "(KYARA_CRAWL_ALLOW_PRIVATE allows it for local mirrors and tests).",
    )


def check_url(url: str, *, allow_private: bool | list | None = None) -> None:
    """Refuse anything but http(s) to public addresses, unless settings allow private ones."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"Only http and https URLs are fetched, not {parts.scheme or 'none'!r}: {url}")
    host = parts.hostname
    if not host:
        raise FetchError("bad_url", f"The URL has no host: {url}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise FetchError("dns", f"Cannot resolve {host}: {exc}") from None
    allow = _allowed_networks() if allow_private is None else allow_private
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not _address_allowed(ip, allow):
            raise _refusal(url, host, ip)


class _PeerChecked:
    """Check the address a connection actually reached. ``check_url`` resolves the name before the
    request; a name that resolves again to another address at connect time (DNS rebinding) is caught
    here, on the socket itself."""

    def _new_conn(self):
        sock = super()._new_conn()
        ip = ipaddress.ip_address(sock.getpeername()[0].split("%", 1)[0])
        if not _address_allowed(ip, _allowed_networks()):
            sock.close()
            raise _refusal(f"{self.host}:{self.port}", self.host, ip)
        return sock


class _CheckedHTTPConnection(_PeerChecked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_PeerChecked, HTTPSConnection):
    pass


class _CheckedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        http_pool = type("CheckedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": _CheckedHTTPConnection})
        https_pool = type("CheckedHTTPSConnectionPool", (HTTPSConnectionPool,),
                          {"ConnectionCls": _CheckedHTTPSConnection})
        self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}


@dataclass
class HttpClient:
    """Requests for one job and one source: thread-safe, one connection pool per thread."""

    politeness: Politeness = field(default_factory=Politeness)
    stop: threading.Event = field(default_factory=threading.Event)
    headers: dict[str, str] = field(default_factory=dict)
    user_agent: str = ""
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 2.0
    max_retry_after: float = 300.0
    max_bytes: int = 30 * 1024 * 1024
    jitter: float = 0.25

    def __post_init__(self) -> None:
        self._local = threading.local()

    @classmethod
    def from_settings(cls, *, politeness: Politeness, stop: threading.Event | None = None, **overrides) -> HttpClient:
        values = dict(
            politeness=politeness,
            stop=stop or threading.Event(),
            user_agent=settings.KYARA_CRAWL_USER_AGENT,
            connect_timeout=settings.KYARA_CRAWL_CONNECT_TIMEOUT,
            read_timeout=settings.KYARA_CRAWL_READ_TIMEOUT,
            retries=settings.KYARA_CRAWL_RETRIES,
            backoff=settings.KYARA_CRAWL_BACKOFF,
            max_retry_after=settings.KYARA_CRAWL_MAX_RETRY_AFTER,
            max_bytes=settings.KYARA_CRAWL_MAX_BYTES,
            jitter=settings.KYARA_CRAWL_JITTER,
        )
        values.update(overrides)
        return cls(**values)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies or netrc from the environment: the URL check must hold
            session.mount("http://", _CheckedAdapter())
            session.mount("https://", _CheckedAdapter())
            session.headers.update({"User-Agent": self.user_agent, **self.headers})
            self._local.session = session
        return session

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    def get(self, url: str, *, params: dict | None = None, max_bytes: int | None = None) -> Response:
        return self.request("GET", url, params=params, max_bytes=max_bytes)

    def request(
        self, method: str, url: str, *, params: dict | None = None, json: object = None, max_bytes: int | None = None
    ) -> Response:
        """One logical request: redirects followed (and re-checked), transient failures retried, bounded."""
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Cancelled("cancelled")
            try:
                return self._once(method, url, params=params, json=json, max_bytes=max_bytes or self.max_bytes)
            except _Retryable as exc:
                attempt += 1
                if attempt > self.retries:
                    raise FetchError(exc.kind, f"{exc.message} (gave up after {attempt} attempts)") from None
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, self.max_retry_after)
                else:
                    delay = min(self.backoff * 2 ** (attempt - 1), self.max_retry_after)
                    delay *= 1.0 + random.random() * self.jitter
                _sleep(delay, self.stop)

    def _once(self, method: str, url: str, *, params, json, max_bytes: int) -> Response:
        for _hop in range(MAX_REDIRECTS + 1):
            check_url(url)
            gate = host_gate(urlsplit(url).netloc.lower(), self.politeness, self.jitter)
            gate.acquire(self.stop)
            try:
                try:
                    resp = self._session().request(
                        method, url, params=params, json=json, stream=True, allow_redirects=False,
                        timeout=(self.connect_timeout, self.read_timeout),
                    )
                except requests.Timeout as exc:
                    raise _Retryable("timeout", f"Timed out: {url} ({exc.__class__.__name__})") from None
                except requests.RequestException as exc:
                    raise _Retryable("connection", f"Connection failed: {url} ({exc.__class__.__name__})") from None
                with resp:
                    if resp.status_code in REDIRECT_STATUSES and resp.headers.get("Location"):
                        url = urljoin(url, resp.headers["Location"])
                        params = None  # already part of the URL we were sent to
                        if resp.status_code == 303:
                            method, json = "GET", None
                        continue
                    if resp.status_code in (429, 503):
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                        if retry_after is not None:
                            gate.pause_until(time.monotonic() + min(retry_after, self.max_retry_after))
                        kind = "rate_limited" if resp.status_code == 429 else "http_503"
                        raise _Retryable(kind, f"HTTP {resp.status_code} from {url}", retry_after)
                    if resp.status_code >= 500 or resp.status_code == 408:
                        raise _Retryable(f"http_{resp.status_code}", f"HTTP {resp.status_code} from {url}")
                    if resp.status_code >= 400:
                        raise FetchError(f"http_{resp.status_code}", f"HTTP {resp.status_code} from {url}")
                    content = self._read_body(resp, url, max_bytes)
                    return Response(resp.url or url, resp.status_code, dict(resp.headers), content)
            finally:
                gate.release()
        raise FetchError("too_many_redirects", f"More than {MAX_REDIRECTS} redirects from {url}")

    def _read_body(self, resp: requests.Response, url: str, max_bytes: int) -> bytes:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchError("too_large", f"{url} is {int(declared):,} bytes, over the limit of {max_bytes:,}")
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in resp.iter_content(64 * 1024):
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError("too_large", f"{url} is over the limit of {max_bytes:,} bytes")
                chunks.append(chunk)
                if self.stop.is_set():
                    raise Cancelled("cancelled during a download")
        except requests.exceptions.ChunkedEncodingError:
            raise _Retryable("truncated", f"The body of {url} ended early") from None
        except requests.Timeout:
            raise _Retryable("timeout", f"Timed out reading {url}") from None
        except requests.RequestException as exc:
            raise _Retryable("connection", f"Connection lost reading {url} ({exc.__class__.__name__})") from None
        body = b"".join(chunks)
        if declared.isdigit() and "Content-Encoding" not in resp.headers and len(body) < int(declared):
            raise _Retryable("truncated", f"The body of {url} ended at {len(body)} of {declared} bytes")
        return body
