import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.no_scale


def _run(args, **env):
    full = {**os.environ, **env}
    full.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the browser tests' setting; never in a deployment
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=120)


def test_production_settings_pass_check_deploy(tmp_path):
    result = _run(
        ["check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY="x" * 10 + "-Zq8!vW3#kP0@rT6$yU1%iO9^aS5&dF2*gH7(jK4)lL",
        DJANGO_ALLOWED_HOSTS="kyara.example.org",
        KYARA_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.production", KYARA_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_everything_is_written_under_kyara_data_dir(tmp_path):
    result = _run(["migrate", "--noinput"], DJANGO_SETTINGS_MODULE="config.settings.local", KYARA_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kyara.sqlite3").exists()
    assert (tmp_path / "media").is_dir() and (tmp_path / "logs").is_dir()
    assert (tmp_path / ".secret_key").stat().st_mode & 0o077 == 0


def test_ensure_admin_generates_a_password_once_and_is_idempotent(tmp_path):
    env = dict(DJANGO_SETTINGS_MODULE="config.settings.local", KYARA_DATA_DIR=str(tmp_path))
    assert _run(["migrate", "--noinput"], **env).returncode == 0
    first = _run(["ensure_admin"], **env)
    assert first.returncode == 0, first.stderr
    password = (tmp_path / "admin_password.txt").read_text().strip()
    assert len(password) >= 12 and password in first.stdout
    second = _run(["ensure_admin"], **env)
    assert "Created" not in second.stdout and password in second.stdout
    other = tmp_path / "other"
    other.mkdir()
    env2 = dict(DJANGO_SETTINGS_MODULE="config.settings.local", KYARA_DATA_DIR=str(other))
    assert _run(["migrate", "--noinput"], **env2).returncode == 0
    _run(["ensure_admin"], **env2)
    assert (other / "admin_password.txt").read_text().strip() != password  # never a fixed default
