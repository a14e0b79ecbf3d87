"""The polite, safe HTTP client: URL refusal, Retry-After, rate and concurrency per host, byte caps."""
from __future__ import annotations

import threading
import time

import pytest

from apps.crawling.sources.http import (
    FetchError,
    HostGate,
    HttpClient,
    Politeness,
    check_url,
    parse_retry_after,
)

pytestmark = pytest.mark.no_scale


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://localhost/x", "http://10.1.2.3/x", "http://192.168.0.1/x",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://[::ffff:127.0.0.1]/x",
    "http://0.0.0.0/x", "http://100.64.0.1/x", "http://240.0.0.1/x", "http://224.0.0.1/x",
])
def test_private_loopback_link_local_and_reserved_addresses_are_refused(url):
    with pytest.raises(FetchError) as info:
        check_url(url, allow_private=False)
    assert info.value.kind == "private_address"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x/", "javascript:alert(1)"])
def test_only_http_and_https(url):
    with pytest.raises(FetchError) as info:
        check_url(url, allow_private=True)
    assert info.value.kind == "bad_scheme"


def test_public_addresses_pass_and_allow_lists_are_precise():
    import ipaddress

    check_url("http://93.184.216.34/x", allow_private=False)  # a literal public address: no DNS needed
    loopback = [ipaddress.ip_network("127.0.0.1/32")]
    check_url("http://127.0.0.1:9/x", allow_private=loopback)
    with pytest.raises(FetchError):
        check_url("http://10.0.0.1/x", allow_private=loopback)


def test_retry_after_in_seconds_or_as_a_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    from email.utils import formatdate

    assert 0 <= parse_retry_after(formatdate(time.time() + 5, usegmt=True)) <= 6


def test_host_gate_spaces_requests_by_rate():
    gate = HostGate(rate=50, concurrency=4, jitter=0)
    stop = threading.Event()
    started = time.monotonic()
    for _ in range(6):
        gate.acquire(stop)
        gate.release()
    assert time.monotonic() - started >= 5 / 50 * 0.9


def test_host_gate_caps_concurrency_and_honours_cancel():
    gate = HostGate(rate=0, concurrency=1, jitter=0)
    stop = threading.Event()
    gate.acquire(stop)
    stop.set()
    from apps.crawling.sources.http import Cancelled

    with pytest.raises(Cancelled):
        gate.acquire(stop)  # the only slot is taken; the cancel ends the wait
    gate.release()


@pytest.mark.django_db
def test_concurrent_requests_per_host_stay_within_the_declared_cap(world, crawl_settings):
    world.image_delay = 0.05
    client = HttpClient.from_settings(politeness=Politeness(rate=1000, concurrency=2))
    urls = [world.url(p) for p in world.posts if p.kind == "ok"][:8]
    threads = [threading.Thread(target=client.get, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert world.max_active <= 2


@pytest.mark.django_db
def test_bytes_per_download_are_capped(world, crawl_settings):
    client = HttpClient.from_settings(politeness=Politeness(rate=1000), max_bytes=100)
    with pytest.raises(FetchError) as info:
        client.get(f"{world.root}/img/120.png")
    assert info.value.kind == "too_large"


@pytest.mark.django_db
def test_a_redirect_to_a_private_address_is_refused_before_connecting(world, crawl_settings):
    client = HttpClient.from_settings(politeness=Politeness(rate=1000))
    post = next(p for p in world.posts if p.kind == "redirect_private")
    with pytest.raises(FetchError) as info:
        client.get(world.url(post))
    assert info.value.kind == "private_address" and "10.255.255.1" in info.value.message


@pytest.mark.django_db
def test_retries_are_bounded(world, crawl_settings, settings):
    settings.KYARA_CRAWL_RETRIES = 2
    client = HttpClient.from_settings(politeness=Politeness(rate=1000))
    post = next(p for p in world.posts if p.kind == "truncated")
    with pytest.raises(FetchError) as info:
        client.get(world.url(post))
    assert info.value.kind == "truncated"
    assert world.hits[f"/img/{post.id}.png"] == 3  # one try and two retries, then give up


@pytest.mark.django_db
def test_the_connected_address_is_checked_too_so_dns_rebinding_cannot_slip_through(world, crawl_settings, settings,
                                                                                    monkeypatch):
    """``check_url`` resolves the name before the request; if the name resolved to another address at
    connect time, the socket's own peer address is checked. Simulated by letting the pre-check pass
    (as a rebinding DNS answer would) while the real connection reaches 127.0.0.1."""
    from apps.crawling.sources import http

    first, second = [world.url(p) for p in world.posts if p.kind == "ok"][:2]
    client = HttpClient.from_settings(politeness=Politeness(rate=1000))
    assert client.get(first).status == 200  # loopback allowed here: it works
    settings.KYARA_CRAWL_ALLOW_PRIVATE = ["10.0.0.0/8"]  # now loopback is private and not allowed
    monkeypatch.setattr(http, "check_url", lambda url, **kw: None)  # the pre-check fooled by DNS
    fresh = HttpClient.from_settings(politeness=Politeness(rate=1000))
    with pytest.raises(FetchError) as info:
        fresh.get(second)
    assert info.value.kind == "private_address" and "127.0.0.1" in info.value.message
