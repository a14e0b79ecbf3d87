"""Shared fixtures: users, API clients, generated images, a real qcluster worker, service checks."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCALE_RUN = os.environ.get("KYARA_SCALE_RUN") == "1"
REQUIRE_SERVICES = os.environ.get("KYARA_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``) the browser tests share one worker, one after another
    (one Chromium); the others spread over the workers.

    In the scale run keep only the tests marked ``backend``: those whose outcome can differ on PostgreSQL,
    Redis or S3 (SQL and locking, the queue's broker, the cache, storage, the fault tests). Every other test
    ran on SQLite in the first pass, through the same code; running it again on PostgreSQL checks nothing new."""
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            if item.get_closest_marker("browser"):
                item.add_marker(pytest.mark.xdist_group("browser"))
    if not SCALE_RUN:
        return
    keep, drop = [], []
    for item in items:
        (keep if item.get_closest_marker("backend") and not item.get_closest_marker("no_scale") else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def require_service(name: str, available: bool, why: str = "") -> None:
    """Skip a test whose service is missing, or fail it where services are required (CI)."""
    if available:
        return
    message = f"{name} is not available{': ' + why if why else ''}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (required: CI=true or KYARA_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def redis_url():
    import redis

    url = os.environ.get("REDIS_URL") or os.environ.get("KYARA_TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        ok, why = True, ""
    except Exception as exc:  # noqa: BLE001
        ok, why = False, str(exc)
    require_service("Redis", ok, why)
    return url


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Each test stores its media in a folder of its own (files one test leaves cannot satisfy or break
    another). Child processes (qcluster, gunicorn, training) are given it as KYARA_MEDIA_ROOT by child_env."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    yield settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    from apps.inference.gallery import gallery_cache

    gallery_cache.clear()  # a gallery view is per process: none may outlive the test that built it

    try:
        cache.clear()
    except Exception:  # noqa: BLE001 - a test without the cache must not fail here
        pass
    yield


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def throttle_rates(settings):
    """``throttle_rates(anon="2/min", login="3/min")``: DRF rates for this test (Kyara's throttles read them
    per request)."""
    def set_rates(**rates: str) -> None:
        current = settings.REST_FRAMEWORK
        settings.REST_FRAMEWORK = {**current, "DEFAULT_THROTTLE_RATES": {**current["DEFAULT_THROTTLE_RATES"], **rates}}
    return set_rates


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("curator", password="pw-curator", is_staff=True)


@pytest.fixture
def staff_api_client(staff_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(staff_user)
    return client


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child process (qcluster, training) that must use the test database and media folder."""
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    env["KYARA_MEDIA_ROOT"] = str(settings.MEDIA_ROOT)  # this test's own media folder
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{name}"
    else:
        s = connection.settings_dict
        env["DATABASE_URL"] = f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name}"
    env.update(extra)
    return env


@contextlib.contextmanager
def running_qcluster(log_name: str = "qcluster-test.log", **extra_env: str):
    """``make run``'s workers on the test database, stopped on exit: a real ``manage.py qcluster`` (the default
    queue; the process yielded) and the training queue's cluster beside it (``manage.py worker --queue``)."""
    folder = Path(os.environ.get("KYARA_DATA_DIR", ROOT / "var" / "test"))
    logs = {"default": log_name, "training": log_name.removesuffix(".log") + "-training.log"}
    with contextlib.ExitStack() as stack:
        procs = []
        for queue, log_file in logs.items():
            log = stack.enter_context(open(folder / log_file, "w"))
            proc = subprocess.Popen([sys.executable, "manage.py", "worker", "--queue", queue], cwd=ROOT,
                                    env=child_env(**extra_env), stdout=log, stderr=subprocess.STDOUT)
            stack.callback(stop_process, proc)
            procs.append(proc)
        yield procs[0]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@dataclass
class Gunicorn:
    proc: subprocess.Popen
    url: str
    host: str
    port: int

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def worker_memory_kb(self) -> dict[str, int]:
        """The (single) worker's resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
        (pid,) = self.worker_pids()
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


@contextlib.contextmanager
def running_gunicorn(*, threads: int = 2, log_name: str = "gunicorn-test.log", use_test_db: bool = True,
                     **extra_env: str):
    """``make serve``'s server, gunicorn with one worker, on a free port of 127.0.0.1; stopped on exit.
    ``use_test_db``: point it at the test database (the caller holds a database fixture)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from django.conf import settings

    env = child_env(**extra_env) if use_test_db else {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
                                                       "KYARA_MEDIA_ROOT": str(settings.MEDIA_ROOT), **extra_env}
    log = open(Path(os.environ.get("KYARA_DATA_DIR", ROOT / "var" / "test")) / log_name, "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", str(threads), "--timeout", "120"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    server = Gunicorn(proc, f"http://127.0.0.1:{port}", "127.0.0.1", port)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {proc.returncode}; see {log.name}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
                if server.worker_pids():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not listen within 60 s; see {log.name}")
            time.sleep(0.2)
        yield server
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def qcluster(transactional_db):
    """A real qcluster (ORM broker here, Redis broker in the scale run) for the test's duration."""
    with running_qcluster() as proc:
        time.sleep(0.5)
        yield proc


def queued_tasks(queue: str = "default") -> list[dict]:
    """The tasks waiting on ``queue``, taken off it, oldest first: from whichever broker the settings name (the
    ORM table here, Redis's list in the scale run). Call it first to start from an empty queue (Redis keeps
    what other tests left)."""
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    from apps.core.queue import queue_cluster

    broker, tasks = get_broker(queue_cluster(queue)), []
    while batch := broker.dequeue():
        tasks += [SignedPackage.loads(payload) for _, payload in batch]
    return tasks


def wait_for(predicate, *, timeout: float = 60.0, interval: float = 0.2, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {message}")


# --- Generated images -----------------------------------------------------------------------------

def make_image_bytes(
    seed: int = 0, *, size: tuple[int, int] = (96, 96), fmt: str = "PNG", mode: str = "RGB", **save_kwargs
) -> bytes:
    """A distinct, structured picture per seed (shapes on a gradient), so pHashes differ by seed."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    w, h = size
    img = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(w // 4, w), y0 + rng.randrange(h // 4, h)
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=color, outline=(0, 0, 0), width=2)
        else:
            draw.ellipse([x0, y0, x1, y1], fill=color, outline=(0, 0, 0), width=2)
    if mode != "RGB":
        img = img.convert(mode)
    out = io.BytesIO()
    img.save(out, format=fmt, **save_kwargs)
    return out.getvalue()


def near_copy_bytes(data: bytes, *, fmt: str = "JPEG") -> bytes:
    """A re-encoded, slightly resized copy: different bytes, same picture (a near-duplicate)."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((img.width - 4, img.height - 4))
    out = io.BytesIO()
    img.save(out, format=fmt, quality=85)
    return out.getvalue()


@pytest.fixture
def image_bytes():
    return make_image_bytes


# --- Chromium: one browser for the whole session, whichever folder's tests ask (two session fixtures would
# each start Playwright's sync API, and the second refuses to run inside the first one's event loop) ---------
CHROMIUM = Path(os.environ.get("KYARA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def browser():
    require_service("Chromium", CHROMIUM.is_file(), f"no {CHROMIUM}; scripts/ensure_chromium.sh installs Debian's")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()
