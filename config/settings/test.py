"""Settings for the test suite: fast hashing, a file-based test database a qcluster child can open."""
import os
from pathlib import Path

# Before base reads it: tests write under var/test unless told otherwise.
os.environ.setdefault("KYARA_DATA_DIR", str(Path(__file__).resolve().parents[2] / "var" / "test"))
# pytest-xdist: each worker (gw0, gw1, ...) writes under a folder of its own inside it: its SQLite file, logs,
# artifacts (job-1-... in two workers' databases), imports and caches. The child processes a test starts
# inherit both variables and keep the worker's folder.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and os.environ.get("KYARA_TEST_WORKER_DIR") != _worker:
    os.environ["KYARA_DATA_DIR"] = str(Path(os.environ["KYARA_DATA_DIR"]) / _worker)
    os.environ["KYARA_TEST_WORKER_DIR"] = _worker
# No test reaches the internet: weights: auto looks on disk only (the training child processes inherit this).
os.environ.setdefault("KYARA_WEIGHTS_DOWNLOAD", "0")
# ... and torchvision's weights cache is the suite's own, so what a developer's machine holds changes nothing.
os.environ.setdefault("TORCH_HOME", str(Path(os.environ["KYARA_DATA_DIR"]) / "torch-home"))

from ._secret import secret_key_for  # noqa: E402,I001 - after KYARA_DATA_DIR is set
from .base import *  # noqa: E402,F401,F403
from .base import DATA_DIR, DATABASES, Q_CLUSTER  # noqa: E402

SECRET_KEY = secret_key_for(DATA_DIR)
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # On disk, not in memory, so that a real qcluster or training child process sees the same rows.
    # One file per test session, so parallel runs in one checkout do not share (and delete) it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
Q_CLUSTER = {**Q_CLUSTER, "workers": 1, "poll": 0.2, "timeout": 300, "retry": 900}
