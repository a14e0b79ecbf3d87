"""SIGKILL the web process (a real gunicorn, as ``make serve`` runs it) mid-upload: nothing is half-written.

Uploads are caught at the two moments that matter, without a mock: one body only half sent, and four ingests
that have written their files but not their rows (this test holds the image table's write lock from a
connection of its own, so their INSERT waits). Then the master is stopped (so it cannot start another worker)
and the worker and master are SIGKILLed. Afterwards the five acknowledged uploads are whole, nothing else has a
row, the files written for the four are whole under their final names and listed by check_media as strays, the
half-sent body left nothing; re-sending the five to a new server stores them, adopting those files, and leaves
the media folder holding exactly what the rows name.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import threading
import uuid
from io import StringIO

import pytest
from django.core.management import call_command

from apps.characters.models import Image
from tests.conftest import make_image_bytes, running_gunicorn, wait_for
from tests.faults import assert_nothing_half_written, media_name, sigkill

pytestmark = [pytest.mark.slow, pytest.mark.backend]


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(port: int, token: str, data: bytes, name: str) -> tuple[int, dict]:
    body, content_type = multipart(data, name)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/api/v1/images/", body=body,
                     headers={"Content-Type": content_type, "Authorization": f"Token {token}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def upload_in_background(port: int, token: str, data: bytes, name: str, outcomes: dict) -> threading.Thread:
    def run():
        try:
            outcomes[name] = upload(port, token, data, name)
        except (OSError, http.client.HTTPException) as exc:
            outcomes[name] = ("connection lost", type(exc).__name__)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def half_sent_upload(port: int, token: str, data: bytes) -> socket.socket:
    """Headers and half the body of an upload; the rest never comes (the socket stays open)."""
    body, content_type = multipart(data, "half.png")
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"POST /api/v1/images/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                  f"Authorization: Token {token}\r\nContent-Length: {len(body)}\r\n\r\n").encode())
    sock.sendall(body[: len(body) // 2])
    return sock


@contextlib.contextmanager
def image_table_write_lock():
    """Hold the write lock on the image table from a connection of this test's own (not Django's): readers go
    on, an INSERT waits. SQLite: BEGIN IMMEDIATE; PostgreSQL: LOCK TABLE ... SHARE ROW EXCLUSIVE."""
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        import sqlite3

        lock = sqlite3.connect(settings["NAME"], isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        lock = psycopg.connect(host=settings["HOST"] or "127.0.0.1", port=settings["PORT"] or 5432,
                               user=settings["USER"], password=settings["PASSWORD"] or None, dbname=settings["NAME"])
        lock.execute(f'LOCK TABLE "{Image._meta.db_table}" IN SHARE ROW EXCLUSIVE MODE')
    try:
        yield
    finally:
        lock.rollback()
        lock.close()


def check_media(*args) -> tuple[int, dict]:
    out = StringIO()
    try:
        call_command("check_media", "--json", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, json.loads(out.getvalue())


def test_sigkill_of_the_web_process_mid_upload_leaves_nothing_half_written(transactional_db, staff_user, media_root):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=staff_user).key
    pictures = [make_image_bytes(500 + i, size=(640, 480)) for i in range(10)]
    shas = [hashlib.sha256(data).hexdigest() for data in pictures]
    acknowledged, in_window, half = pictures[:5], pictures[5:9], pictures[9]

    outcomes: dict = {}
    with running_gunicorn(threads=8, log_name="gunicorn-fault-upload.log") as server:
        for i, data in enumerate(acknowledged):
            status, body = upload(server.port, token, data, f"ack{i}.png")
            assert status == 201 and body["outcome"] == "new", body
        with image_table_write_lock():
            threads = [upload_in_background(server.port, token, data, f"win{i}.png", outcomes)
                       for i, data in enumerate(in_window)]
            half_socket = half_sent_upload(server.port, token, half)
            # Each of the four has stored its original and its thumbnail and now waits for the lock to write its row.
            wait_for(lambda: all((media_root / media_name(sha, "webp", "thumbs")).exists() for sha in shas[5:9]),
                     timeout=60, message="the four ingests to reach their row")
            (worker,) = server.worker_pids()
            os.kill(server.proc.pid, signal.SIGSTOP)  # the master may not start another worker meanwhile
            sigkill(worker, server.proc.pid)
        for thread in threads:
            thread.join(timeout=30)
        half_socket.close()

    assert all(outcome[0] == "connection lost" for outcome in outcomes.values()), outcomes  # nothing acknowledged
    state = assert_nothing_half_written()
    assert state.rows == 5 and set(Image.objects.values_list("sha256", flat=True)) == set(shas[:5])
    window_files = {media_name(sha) for sha in shas[5:9]} | {media_name(sha, "webp", "thumbs") for sha in shas[5:9]}
    assert set(state.orphans) == window_files  # whole (checked above), under their final names, with no row
    assert not list(media_root.rglob(f"*{shas[9]}*"))  # the half-sent body left nothing at all
    code, report = check_media("--grace", "0")
    assert code == 1 and report["problems"] == []
    assert {s["path"] for s in report["strays"] if s["kind"] == "orphan"} == window_files
    print(f"\nafter the SIGKILL: {state.rows} rows, {len(state.orphans)} whole orphan files, "
          f"{len(state.temporary)} temporary files; check_media lists {len(report['strays'])} strays")

    # The client sends again what was never acknowledged: stored, the orphans adopted, nothing stray left.
    with running_gunicorn(threads=2, log_name="gunicorn-fault-upload-2.log") as server:
        for i, data in enumerate([*in_window, half]):
            status, body = upload(server.port, token, data, f"again{i}.png")
            assert status == 201 and body["outcome"] == "new", body
    state = assert_nothing_half_written()
    assert state.rows == 10 and state.orphans == [] and set(Image.objects.values_list("sha256", flat=True)) == set(shas)
    code, report = check_media("--repair", "--grace", "0")  # removes any temporary file a killed write left
    assert code == 0 and report["problems"] == [] and all(s["kind"] == "temporary" for s in report["strays"])
    assert assert_nothing_half_written().temporary == []
