"""Each test stores media in a folder of its own (tests/conftest.py ``media_root``), child processes are told
where it is (KYARA_MEDIA_ROOT), and /media/ serves from wherever MEDIA_ROOT points now."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from tests.conftest import ROOT, child_env


def test_the_default_storage_writes_under_this_tests_folder(settings, tmp_path):
    assert Path(settings.MEDIA_ROOT) == tmp_path / "media"
    name = default_storage.save("images/aa/bb/probe.txt", ContentFile(b"mine"))
    assert (tmp_path / "media" / name).read_bytes() == b"mine"


def test_a_child_process_is_given_the_same_folder(tmp_path):
    script = "from django.core.files.storage import default_storage as s; print(s.path('images'))"
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "media" / "images")


def test_media_urls_follow_the_folder_of_the_moment(client, tmp_path):
    default_storage.save("thumbs/aa/bb/seen.webp", ContentFile(b"served from this test's folder"))
    response = client.get("/media/thumbs/aa/bb/seen.webp")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"served from this test's folder"
