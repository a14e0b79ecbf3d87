"""The scale-out path for media: django-storages' S3 backend against a real S3-compatible server (moto's server
mode, which scripts/test_scale.sh starts on 127.0.0.1). Images are uploaded and ingested through the API, a dataset
version is frozen, a tiny ``simple`` model is trained in its own process, and a real gunicorn serves predictions
(its runtime judged on validation images read from S3) and hands out image URLs that the S3 server answers. Every
process reads the S3 settings from the environment, as a deployment does; nothing is written to local media.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from io import StringIO

import pytest
import requests

from tests.conftest import ROOT, SCALE_RUN, child_env, require_service, running_gunicorn
from tests.ml.images import class_image_bytes

pytestmark = [pytest.mark.slow, pytest.mark.backend]

CLASSES = 3
PER_CLASS = 14


@pytest.fixture
def s3_media(transactional_db, settings, monkeypatch):
    """A fresh bucket on the run's S3 server; this process, and every child process, store media there."""
    if not SCALE_RUN:
        pytest.skip("the S3 media path runs in the scale-out run (scripts/test_scale.sh starts its S3 server)")
    import boto3

    endpoint = os.environ.get("KYARA_TEST_S3_ENDPOINT_URL", "")
    client = boto3.client("s3", endpoint_url=endpoint or None, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    ok, why = False, "KYARA_TEST_S3_ENDPOINT_URL is not set (scripts/test_scale.sh starts moto_server and sets it)"
    if endpoint:
        try:
            client.list_buckets()
            ok, why = True, ""
        except Exception as exc:  # noqa: BLE001
            why = str(exc)
    require_service("S3 server (moto)", ok, why)
    bucket = f"kyara-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    env = {"KYARA_S3_BUCKET": bucket, "KYARA_S3_ENDPOINT_URL": endpoint, "KYARA_S3_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The storages exactly as config/settings/base.py builds them from that environment (asked of a child process).
    script = "import json; from django.conf import settings; print(json.dumps(settings.STORAGES))"
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    storages = json.loads(done.stdout.strip().splitlines()[-1])
    assert storages["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    settings.STORAGES = storages
    settings.S3_BUCKET = bucket
    yield client, bucket
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    if objects:
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in objects]})
    client.delete_bucket(Bucket=bucket)


def test_upload_ingest_train_and_serve_from_s3(s3_media, staff_api_client, monkeypatch, media_root, throttle_rates):
    from django.core.files.storage import default_storage
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    from apps.characters.models import Image
    from apps.characters.services import character_get_or_create, dataset_version_freeze, series_get_or_create
    from apps.inference.services import model_alias_set
    from apps.training.models import TrainingJob

    client, bucket = s3_media
    assert default_storage.bucket_name == bucket  # this process's default storage is the bucket
    throttle_rates(user="100000/min")
    series = series_get_or_create(slug="palette", name="Palette")
    slugs = [character_get_or_create(series=series, name=f"Colour {label}").slug for label in range(CLASSES)]
    uploaded: dict[str, bytes] = {}
    for label, slug in enumerate(slugs):
        for seed in range(PER_CLASS):
            data = class_image_bytes(label, 100 + seed, size=64)
            response = staff_api_client.post("/api/v1/images/", {
                "file": SimpleUploadedFile(f"{slug}-{seed}.png", data), "character": slug, "status": "approved"})
            assert response.status_code == 201, response.content
            uploaded[hashlib.sha256(data).hexdigest()] = data

    # Stored in the bucket under their content-addressed names (originals and thumbnails), nothing on local disk.
    keys = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}
    assert {f"images/{sha[:2]}/{sha[2:4]}/{sha}.png" for sha in uploaded} <= keys
    assert len([k for k in keys if k.startswith("thumbs/")]) == len(uploaded) == Image.objects.count()
    assert not [p for p in media_root.rglob("*") if p.is_file()]
    out = StringIO()
    call_command("check_media", "--json", "--grace", "0", stdout=out)  # every row's object is whole; no strays
    report = json.loads(out.getvalue())
    assert report["checked"] == len(uploaded) and report["problems"] == [] and report["strays"] == []

    # Train in a process of its own, which reads the images from S3.
    version = dataset_version_freeze(name="palette-v1", val=0.2, test=0.2)
    for key, value in child_env(KYARA_TRAINING_THREADS="1", KYARA_EVAL_AFTER_TRAINING_SPLIT="").items():
        monkeypatch.setenv(key, value)
    out = StringIO()
    call_command("train", "--dataset-version", version.name, "--arch", "simple", "--epochs", "4", "--image-size",
                 "32", "--weights", "none", "--set", "workers=0", "--set", "threads=1", "--set", "lr=0.003", "--sync",
                 "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert result["status"] == "succeeded", result
    job = TrainingJob.objects.get(pk=result["id"])
    assert job.model_version is not None and job.best_val_accuracy > 1 / CLASSES
    model_alias_set(name="default", version=job.model_version, why="trained from S3 media")

    # Serve: a real gunicorn with the S3 settings predicts, and its image URLs are the S3 server's.
    test_items = version.items.filter(split="test").select_related("image", "character")
    with running_gunicorn(threads=2, log_name="gunicorn-s3.log", KYARA_THROTTLE_USER="100000/min") as server:
        right = 0
        for item in test_items:
            data = uploaded[item.image.sha256]
            response = requests.post(f"{server.url}/api/v1/predict", files={"file": ("x.png", data)}, timeout=120)
            assert response.status_code == 200, response.text
            right += response.json()["label"] == item.character.slug
        listing = requests.get(f"{server.url}/api/v1/images/", timeout=60).json()["results"][:5]
    assert right >= len(test_items) / 2, f"{right} of {len(test_items)} test images right"
    for row in listing:
        assert row["url"].startswith(os.environ["KYARA_S3_ENDPOINT_URL"]) and "Signature=" in row["url"]  # signed
        original = requests.get(row["url"], timeout=30)
        assert original.status_code == 200 and hashlib.sha256(original.content).hexdigest() == row["sha256"]
        thumbnail = requests.get(row["thumbnail_url"], timeout=30)
        assert thumbnail.status_code == 200 and thumbnail.content[:4] == b"RIFF"
    assert not [p for p in media_root.rglob("*") if p.is_file()]
    print(f"\nS3 ({bucket}): {len(uploaded)} uploads, {len(keys)} objects, trained to val "
          f"{job.best_val_accuracy:.2f}, {right}/{len(test_items)} test images right through gunicorn")
