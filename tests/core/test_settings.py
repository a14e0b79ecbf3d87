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


@pytest.mark.slow  # a fresh database migrated in a child process: 25 s on a busy 2-core box
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


def _serve_env(tmp_path, **extra) -> dict:
    """The environment of `make serve` on a machine where nothing is set."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "DATABASE_URL",
                        "REDIS_URL", "DJANGO_ALLOWED_HOSTS")}
    return {**env, "KYARA_DATA_DIR": str(tmp_path), **extra}


def test_make_serve_settings_pass_check_deploy_with_nothing_set(tmp_path):
    env = _serve_env(tmp_path, DJANGO_SETTINGS_MODULE="config.settings.production", KYARA_LOCAL_SECRET="1",
                     KYARA_HTTPS="0")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / ".secret_key").stat().st_mode & 0o077 == 0 and len((tmp_path / ".secret_key").read_text()) >= 50
    # Plain HTTP is refused as soon as a host name other people can reach is served.
    exposed = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                             env={**env, "DJANGO_ALLOWED_HOSTS": "127.0.0.1,kyara.example.org"}, timeout=120)
    assert exposed.returncode != 0 and "KYARA_HTTPS=0" in exposed.stderr and "kyara.example.org" in exposed.stderr


@pytest.mark.slow
def test_make_serve_runs_production_settings_on_localhost(tmp_path):
    """scripts/run.sh as `make serve` runs it (after migrate and ensure_admin), with no variable set: DEBUG off
    (a 404 is not Django's debug page), secure headers, and a log-in that works over plain HTTP."""
    import signal
    import socket
    import time

    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _serve_env(tmp_path)
    for step in (["migrate", "--noinput"], ["ensure_admin"]):
        done = subprocess.run([sys.executable, "manage.py", *step], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
    password = (tmp_path / "admin_password.txt").read_text().strip()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**env, "SERVER": "gunicorn", "HOST": "127.0.0.1", "PORT": str(port),
                                   "VENV": str(Path(sys.executable).parent.parent)}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                missing = requests.get(f"{base}/no-such-page/", timeout=30)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        assert missing.status_code == 404 and "Traceback" not in missing.text and "DEBUG = True" not in missing.text
        assert "URLconf" not in missing.text  # the debug 404 lists the URL patterns
        api_missing = requests.get(f"{base}/api/v1/no-such-thing/", timeout=30)
        assert api_missing.status_code == 404 and api_missing.json()["error"]["code"] == "not_found"
        page = requests.get(f"{base}/admin/login/", timeout=30)
        assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
        session = requests.Session()
        session.get(f"{base}/admin/login/", timeout=30)
        logged_in = session.post(f"{base}/admin/login/?next=/admin/", timeout=30, allow_redirects=False, data={
            "username": "admin", "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            headers={"Referer": f"{base}/admin/login/"})
        assert logged_in.status_code == 302 and logged_in.headers["Location"] == "/admin/", logged_in.text[:500]
        assert (tmp_path / ".secret_key").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
