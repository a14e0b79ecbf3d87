"""The predict pixel cap (``KYARA_PREDICT_MAX_PIXELS``), apart from ingest's: a 100 KB PNG that declares 6300×6300
(40 million pixels, 119 MB decoded; within ingest's limit) is refused on /predict from its header, before a pixel is
decoded, with a 400 ``too_many_pixels`` in the one error body. Shown in process and against a real gunicorn, whose
worker's peak memory must not move by anything like a decoded picture."""
from __future__ import annotations

import http.client
import io
import json
import struct
import time
import uuid
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from tests.conftest import running_gunicorn

from .conftest import LABELS

SIDE = 6300
DECODED_MB = SIDE * SIDE * 3 / 2**20  # the RGB picture the server would hold: 113.6 MiB


def declared_huge_png(side: int = SIDE) -> bytes:
    """A real, valid PNG of ``side``² black pixels (rows streamed through zlib: this process never holds them)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + side * 3)  # filter byte, then RGB
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    data = declared_huge_png()
    with Image.open(io.BytesIO(data)) as img:  # what a decoder sees: a real PNG of that size
        assert img.format == "PNG" and img.size == (SIDE, SIDE)
    assert len(data) < 200 * 1024
    return data


def test_the_default_caps_keep_predict_far_below_ingest(settings):
    assert settings.KYARA_PREDICT_MAX_PIXELS <= settings.KYARA_MAX_IMAGE_PIXELS // 2
    # The 6300² picture is one ingest would take and predict refuses: the two limits are apart.
    assert settings.KYARA_PREDICT_MAX_PIXELS < SIDE * SIDE <= settings.KYARA_MAX_IMAGE_PIXELS


def test_predict_refuses_the_6300_square_png_from_its_header(api_client, registry, huge_png, class_images):
    response = api_client.post("/api/v1/predict", {"file": SimpleUploadedFile("bomb.png", huge_png)})
    body = response.json()
    assert response.status_code == 400, body
    assert body["error"]["code"] == "too_many_pixels"
    assert "6300×6300" in body["error"]["message"] and f"{4096 * 4096:,}" in body["error"]["message"]
    batch = api_client.post("/api/v1/predict_batch", {"files": [
        SimpleUploadedFile("fine.jpg", class_images[LABELS[0]]), SimpleUploadedFile("bomb.png", huge_png)]})
    error = batch.json()["error"]
    assert batch.status_code == 400 and error["code"] == "too_many_pixels"
    assert error["details"] == {"index": 1, "filename": "bomb.png"}


def _post(port: int, path: str, files: list[tuple[str, bytes]], field: str) -> tuple[int, dict, float]:
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files)
    body += f"--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.monotonic()
    conn.request("POST", path, body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    return response.status, answer, time.monotonic() - started


@pytest.mark.slow
def test_a_real_server_refuses_it_without_decoding(transactional_db, registry, huge_png, class_images):
    with running_gunicorn(threads=2, log_name="gunicorn-predict-pixels.log") as server:
        # Warm up: the first request imports torch and loads the model (that memory is not the picture's).
        status, body, _ = _post(server.port, "/api/v1/predict", [("ok.jpg", class_images[LABELS[1]])], "file")
        assert status == 200 and body["label"] == LABELS[1], body
        before = server.worker_memory_kb()
        status, single, seconds = _post(server.port, "/api/v1/predict", [("bomb.png", huge_png)], "file")
        batch_status, batch, _ = _post(server.port, "/api/v1/predict_batch",
                                       [(f"bomb{i}.png", huge_png) for i in range(10)], "files")
        after = server.worker_memory_kb()
    assert status == 400 and single["error"]["code"] == "too_many_pixels", single
    assert batch_status == 400 and batch["error"]["code"] == "too_many_pixels", batch
    growth_mb = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(f"\n6300² PNG ({len(huge_png) / 1024:.0f} KB, {DECODED_MB:.0f} MiB decoded) refused in {seconds * 1000:.0f} ms; "
          f"worker peak RSS {before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MB (+{growth_mb:.1f} MB) "
          f"after it and a batch of ten")
    assert growth_mb < DECODED_MB / 4, (before, after)
