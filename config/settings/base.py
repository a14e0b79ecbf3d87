"""Kyara settings: every value read from the environment lives here, grouped by concern.

Defaults give the embedded path (SQLite, django-q2's ORM broker, local-memory cache, media on local
disk), all under one folder, ``KYARA_DATA_DIR``. The scale-out path is switched on by environment
variables only (``DATABASE_URL``, ``REDIS_URL``, ``KYARA_S3_BUCKET``, ``KYARA_WORKERS``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Where everything the platform writes lives -------------------------------------------------
DATA_DIR = Path(env_str("KYARA_DATA_DIR", str(BASE_DIR / "var"))).resolve()
# Media on local disk (images, thumbnails) may live apart from the rest (a bigger disk; a test's own folder).
MEDIA_ROOT = Path(env_str("KYARA_MEDIA_ROOT") or str(DATA_DIR / "media")).resolve()
ARTIFACTS_DIR = DATA_DIR / "artifacts"
LOG_DIR = DATA_DIR / "logs"
CACHE_DIR = DATA_DIR / "cache"
STATIC_ROOT = DATA_DIR / "static"  # collectstatic (make serve) writes here; WhiteNoise serves it
for _folder in (DATA_DIR, MEDIA_ROOT, ARTIFACTS_DIR, LOG_DIR, CACHE_DIR, STATIC_ROOT):
    _folder.mkdir(parents=True, exist_ok=True)

# --- Core Django ---------------------------------------------------------------------------------
SECRET_KEY = env_str("DJANGO_SECRET_KEY")  # local/test settings derive one; production requires it
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_filters",
    "django_q",
    "apps.core",
    "apps.characters",
    "apps.crawling",
    "apps.inference",
    "apps.training",
    "apps.evaluation",
    "apps.review",
    "apps.improvement",
    "apps.dashboard",
]

MIDDLEWARE = [
    # First: a body over its limit is refused before anything reads it (apps/core/limits.py).
    "apps.core.limits.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from any server (gunicorn included) without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Database: SQLite under KYARA_DATA_DIR unless DATABASE_URL says otherwise --------------------
_SQLITE_OPTIONS = {
    # WAL lets the web server, the qcluster and the training process read while one writes;
    # IMMEDIATE transactions make writers queue on the lock instead of failing to upgrade it.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
}
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("KYARA_DB_CONN_MAX_AGE", 60))}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "kyara.sqlite3"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(_SQLITE_OPTIONS)
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# --- Cache and queue: local memory and the ORM broker unless REDIS_URL is set --------------------
REDIS_URL = env_str("REDIS_URL")
RESULT_CACHE_TTL = env_int("KYARA_RESULT_CACHE_TTL", 3600)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("KYARA_CACHE_PREFIX", "kyara"),
            "TIMEOUT": RESULT_CACHE_TTL,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "kyara",
            "TIMEOUT": RESULT_CACHE_TTL,
            "OPTIONS": {"MAX_ENTRIES": env_int("KYARA_RESULT_CACHE_SIZE", 1000)},
        }
    }

Q_CLUSTER = {
    "name": env_str("KYARA_QUEUE_NAME", "kyara"),
    "workers": env_int("KYARA_WORKERS", 2),
    # Long jobs (crawls, training launches) run for hours; retry must exceed timeout so a task still
    # running is never handed to a second worker, and one attempt means a failure is never re-run
    # behind the job's back: Kyara's own job models decide about resuming.
    "timeout": env_int("KYARA_TASK_TIMEOUT", 6 * 3600),
    "retry": env_int("KYARA_TASK_TIMEOUT", 6 * 3600) + 600,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.5,
    "daemonize_workers": False,  # workers start child processes (training) of their own
    "label": "Kyara tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
# Training has a cluster (a queue) of its own, so a two-hour run never holds a worker that crawls, suggestions
# and evaluations wait for. ``enqueue(..., queue="training")`` sends work there. ``manage.py worker --queue
# default|training`` (make worker QUEUE=...) starts a queue's cluster, on this machine or another one that shares
# the database (and Redis, if any); django-q2 knows which from Q_CLUSTER_NAME, which that command sets.
KYARA_TRAINING_QUEUE_NAME = env_str("KYARA_TRAINING_QUEUE_NAME", f"{Q_CLUSTER['name']}-training")
KYARA_TRAINING_TASK_TIMEOUT = env_int("KYARA_TRAINING_TASK_TIMEOUT", 48 * 3600)
Q_CLUSTER["ALT_CLUSTERS"] = {
    KYARA_TRAINING_QUEUE_NAME: {
        # One training at a time per machine by default: a run takes every core (or the GPU) it is given.
        "workers": env_int("KYARA_TRAINING_WORKERS", 1),
        "timeout": KYARA_TRAINING_TASK_TIMEOUT,
        "retry": KYARA_TRAINING_TASK_TIMEOUT + 600,
        "label": "Kyara training",
    },
}

# --- Background jobs (crawl, training, evaluation: one lifecycle in apps.core.jobs) --------------
# A running job's process writes a heartbeat this often, from a thread of its own (so waiting out a
# Retry-After or a long download never silences it), and looks for a cancel this often.
KYARA_JOB_HEARTBEAT_SECONDS = env_float("KYARA_JOB_HEARTBEAT_SECONDS", 10.0)
KYARA_JOB_POLL_SECONDS = env_float("KYARA_JOB_POLL_SECONDS", 0.5)
# A running job without a heartbeat for this long (or whose process on this host is gone) is marked
# lost by the sweep, a django-q schedule run every KYARA_JOB_SWEEP_MINUTES (0: no schedule).
KYARA_JOB_LOST_AFTER = env_float("KYARA_JOB_LOST_AFTER", env_float("KYARA_TRAINING_LOST_AFTER", 300.0))
KYARA_JOB_SWEEP_MINUTES = env_int("KYARA_JOB_SWEEP_MINUTES", 1)

# --- Media and static files ----------------------------------------------------------------------
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
S3_BUCKET = env_str("KYARA_S3_BUCKET")
if S3_BUCKET:
    STORAGES = {
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": S3_BUCKET,
                "endpoint_url": env_str("KYARA_S3_ENDPOINT_URL") or None,
                "region_name": env_str("KYARA_S3_REGION") or None,
                "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
                "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
                "file_overwrite": False,
                "querystring_auth": env_bool("KYARA_S3_SIGNED_URLS", True),
            },
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
else:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

# --- REST API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.IsStaffOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.AutoSchema",  # drf-spectacular's, with every error documented
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    # Every API view is throttled per client; views with their own (predict, log-in) replace these.
    "DEFAULT_THROTTLE_CLASSES": ["apps.core.throttling.AnonThrottle", "apps.core.throttling.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("KYARA_THROTTLE_ANON", "120/min"),
        "user": env_str("KYARA_THROTTLE_USER", "1200/min"),
        # Log-in forms (pages, admin, browsable API) and POST /api/v1/auth/token/, per client address.
        "login": env_str("KYARA_THROTTLE_LOGIN", "10/min"),
    },
    # How many reverse proxies stand in front of the server. A client is told apart by its address:
    # with 0 (the default) the peer's, and X-Forwarded-For is ignored (a client could pick its own
    # throttle bucket with it); behind one proxy (nginx, a load balancer) set KYARA_NUM_PROXIES=1.
    "NUM_PROXIES": env_int("KYARA_NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Kyara API",
    "DESCRIPTION": "Collect, curate, train, evaluate and serve an anime-character recognizer.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Several models have a "status"; name their enums after the model so the schema stays readable.
    "ENUM_NAME_OVERRIDES": {
        "ImageStatusEnum": "apps.characters.models.Image.Status",
        "JobStatusEnum": "apps.core.models.JobStatus",  # every job: crawl, training, evaluation
        "EvaluationOriginEnum": "apps.evaluation.models.EvaluationRun.Origin",
        "CycleOriginEnum": "apps.improvement.models.Cycle.Origin",
        "CycleStageEnum": "apps.improvement.models.Stage",
        "CycleStageStatusEnum": "apps.improvement.models.StageStatus",
    },
}
CORS_ALLOWED_ORIGINS = env_list("KYARA_CORS_ORIGINS")
CORS_ALLOW_ALL_ORIGINS = env_bool("KYARA_CORS_ALLOW_ALL", False)

# The pages' own log-in (config/urls.py); the admin keeps its own.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "dashboard:home"

# --- Images and ingest ---------------------------------------------------------------------------
KYARA_MIN_IMAGE_SIDE = env_int("KYARA_MIN_IMAGE_SIDE", 64)
KYARA_MAX_IMAGE_BYTES = env_int("KYARA_MAX_IMAGE_BYTES", 30 * 1024 * 1024)
KYARA_MAX_IMAGE_PIXELS = env_int("KYARA_MAX_IMAGE_PIXELS", 40_000_000)
KYARA_NEAR_DUPLICATE_DISTANCE = env_int("KYARA_NEAR_DUPLICATE_DISTANCE", 6)
KYARA_THUMBNAIL_SIZE = env_int("KYARA_THUMBNAIL_SIZE", 160)
# A zip of <series>_<character>/ folders uploaded from the browser waits here until it is imported: one up to
# KYARA_IMPORT_INLINE_MAX_BYTES within the request, a bigger one by a worker (the largest: KYARA_IMPORT_MAX_BYTES).
KYARA_IMPORTS_DIR = Path(env_str("KYARA_IMPORTS_DIR", str(DATA_DIR / "imports")))
KYARA_IMPORT_INLINE_MAX_BYTES = env_int("KYARA_IMPORT_INLINE_MAX_BYTES", 5 * 1024 * 1024)

# --- Inference -----------------------------------------------------------------------------------
KYARA_PREDICT_BATCH_MAX = env_int("KYARA_PREDICT_BATCH_MAX", 10)  # files per /predict_batch
KYARA_PREDICT_MAX_BYTES = env_int("KYARA_PREDICT_MAX_BYTES", 10 * 1024 * 1024)  # per uploaded file
# Pixels per picture sent to /predict, checked from the header before a pixel is decoded. Far below ingest's
# 40 MP: a model looks at ~256 px, and a tiny compressed PNG can declare 40 MP (120 MB decoded, ten per batch,
# several requests at once). 4096² takes every phone photo (12-16 MP); larger ones are refused with a 400
# too_many_pixels that names the limit (scale the picture down first).
KYARA_PREDICT_MAX_PIXELS = env_int("KYARA_PREDICT_MAX_PIXELS", 4096 * 4096)
KYARA_PREDICT_MIN_SIDE = env_int("KYARA_PREDICT_MIN_SIDE", 8)
KYARA_PREDICT_TOP_K = env_int("KYARA_PREDICT_TOP_K", 5)
KYARA_PREDICT_TOP_K_MAX = env_int("KYARA_PREDICT_TOP_K_MAX", 100)
KYARA_PREDICTOR_CACHE_SIZE = env_int("KYARA_PREDICTOR_CACHE_SIZE", 3)  # loaded models per process (LRU)
KYARA_PREDICTOR_RETRY_SECONDS = env_int("KYARA_PREDICTOR_RETRY_SECONDS", 30)  # before re-trying a broken artifact
# Each server process re-reads these aliases every few seconds and loads what they point at (0: off).
KYARA_WARM_ALIASES = env_list("KYARA_WARM_ALIASES", "default")
KYARA_ALIAS_WATCH_SECONDS = env_int("KYARA_ALIAS_WATCH_SECONDS", 5)
# Gallery characters (apps.inference.gallery): characters the served model has no class for, answered from their
# approved images' embeddings. A serving process re-reads a version's gallery at most this often.
KYARA_GALLERY = env_bool("KYARA_GALLERY", True)
KYARA_GALLERY_POLL_SECONDS = env_float("KYARA_GALLERY_POLL_SECONDS", 2.0)
# Suspect labels (evaluation): each approved image's nearest neighbours by the model's embedding vote on its
# character; listed only when neighbours agree with this share of the labels at least; at most this many.
KYARA_SUSPECT_NEIGHBOURS = env_int("KYARA_SUSPECT_NEIGHBOURS", 10)
KYARA_SUSPECT_MIN_AGREEMENT = env_float("KYARA_SUSPECT_MIN_AGREEMENT", 0.8)
KYARA_SUSPECT_MAX = env_int("KYARA_SUSPECT_MAX", 500)
# How long a process may answer from a cached alias → version pair after a move made in another process
# (moves in the same process, or any process with Redis, are seen at once).
KYARA_ALIAS_CACHE_SECONDS = env_int("KYARA_ALIAS_CACHE_SECONDS", 2)
# auto: the runtime recorded for this kind of machine on each model version (measured once: accuracy on the
# version's validation images, then speed; apps/ml/runtime_choice.py), fp32 for an unregistered artifact.
# Or one runtime by name for every version: torch, onnxruntime, openvino-fp32, openvino-bf16,
# onnxruntime-int8, openvino-int8, cuda-fp16 (no guard then: an operator's override).
KYARA_INFERENCE_BACKEND = env_str("KYARA_INFERENCE_BACKEND", "auto")
# The runtimes "auto" considers (a missing package or device skips one, with the reason on the version).
KYARA_RUNTIME_CANDIDATES = env_list(
    "KYARA_RUNTIME_CANDIDATES", "torch,onnxruntime,openvino-fp32,openvino-bf16,onnxruntime-int8,openvino-int8,cuda-fp16")
# Validation images a candidate is judged on, training images int8 is calibrated on (spread over the split).
KYARA_RUNTIME_GUARD_IMAGES = env_int("KYARA_RUNTIME_GUARD_IMAGES", 1000)
KYARA_RUNTIME_CALIBRATION_IMAGES = env_int("KYARA_RUNTIME_CALIBRATION_IMAGES", 200)
# Measure at registration, in a worker (else at the first load on each kind of machine).
KYARA_RUNTIME_CHOOSE_ON_REGISTER = env_bool("KYARA_RUNTIME_CHOOSE_ON_REGISTER", True)
# Gather concurrent single-image requests of one process into one forward (off: bench/api.py measures both).
KYARA_MICROBATCH = env_bool("KYARA_MICROBATCH", False)
KYARA_MICROBATCH_WINDOW_MS = env_float("KYARA_MICROBATCH_WINDOW_MS", 0.0)  # 0: only requests already waiting
KYARA_MICROBATCH_MAX = env_int("KYARA_MICROBATCH_MAX", 8)
# Intra-op threads per model; 1 keeps latency steady on a small shared box (concurrent requests still
# use every core through the server's threads).
KYARA_INFERENCE_THREADS = env_int("KYARA_INFERENCE_THREADS", 1)
# A batch request decodes on this many threads and runs its one forward with this many intra-op threads.
# Measured with bench/api.py on this 2-core box: idle, 2 threads made /predict_batch 1.89x the per-image
# throughput of single requests (1 thread: 1.22x); while other work loads the cores, 1 is faster. A
# serving box is usually its own, so the default uses up to 2 cores; set 1 on a shared one.
KYARA_INFERENCE_BATCH_THREADS = env_int("KYARA_INFERENCE_BATCH_THREADS", min(2, os.cpu_count() or 1))
# Optional promotion gate: refuse to point the gated aliases at a version whose metric is below this.
KYARA_PROMOTION_METRIC = env_str("KYARA_PROMOTION_METRIC", "accuracy")
KYARA_PROMOTION_MIN = env_float("KYARA_PROMOTION_MIN", -1.0)  # below 0: the gate is off
KYARA_PROMOTION_GATED_ALIASES = env_list("KYARA_PROMOTION_GATED_ALIASES", "default")
# The largest request body read at all (a multipart one; any other body stops at Django's
# DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB). Over it: a 413 before a byte is read. The default fits the biggest
# legitimate body: a full /predict_batch or one image upload. /predict and /predict_batch ask for less
# (their files plus 64 KiB).
KYARA_MAX_REQUEST_BYTES = env_int(
    "KYARA_MAX_REQUEST_BYTES",
    max(KYARA_MAX_IMAGE_BYTES, KYARA_PREDICT_BATCH_MAX * KYARA_PREDICT_MAX_BYTES) + 1024 * 1024,
)
# The largest zip the import page takes: the request limit less room for the form around it (a bigger one is
# imported on the server with manage.py import_images, or after raising both).
KYARA_IMPORT_MAX_BYTES = env_int("KYARA_IMPORT_MAX_BYTES", KYARA_MAX_REQUEST_BYTES - 64 * 1024)
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].update({
    "predict_anon": env_str("KYARA_THROTTLE_PREDICT_ANON", "600/min"),
    "predict_user": env_str("KYARA_THROTTLE_PREDICT_USER", "6000/min"),
    # Requests that make a server process load a model it does not hold, per client (staff not counted).
    "model_load": env_str("KYARA_THROTTLE_MODEL_LOAD", "30/hour"),
})
# Anonymous clients may name an alias in ?model=; a version name only when this is on (signed-in
# clients always may). Cycling through versions would otherwise make every request a model load.
KYARA_PREDICT_ANON_VERSIONS = env_bool("KYARA_PREDICT_ANON_VERSIONS", False)

# --- Training ------------------------------------------------------------------------------------
# Each job leaves a folder here (config.json, metrics.csv, last.pt, best.pt, train.log).
KYARA_TRAINING_RUNS_DIR = ARTIFACTS_DIR / "training"
# Serving artifacts of finished jobs (what ModelVersion.artifact points at).
KYARA_TRAINING_MODELS_DIR = ARTIFACTS_DIR / "models"
# Decoded uint8 images, reused by resumed and repeated jobs; empty turns the disk cache off.
KYARA_TRAINING_DECODED_CACHE = env_str("KYARA_TRAINING_DECODED_CACHE", str(CACHE_DIR / "decoded"))
# torch threads of a training process (0: torch's default, one per core).
KYARA_TRAINING_THREADS = env_int("KYARA_TRAINING_THREADS", 0)
# More than 1: the launcher starts the job under torchrun with this many processes (DDP).
KYARA_TRAINING_PROCESSES = env_int("KYARA_TRAINING_PROCESSES", 1)
# weights: auto (the default) starts from ImageNet weights found here (`manage.py fetch_weights` puts them
# here), in torchvision's cache, or downloaded when KYARA_WEIGHTS_DOWNLOAD allows; else from scratch, and
# the job says which and why.
KYARA_WEIGHTS_DIR = Path(env_str("KYARA_WEIGHTS_DIR", str(DATA_DIR / "weights"))).expanduser()
KYARA_WEIGHTS_DOWNLOAD = env_bool("KYARA_WEIGHTS_DOWNLOAD", True)
# After a cancel, how long the launcher lets the process stop by itself before SIGTERM, then SIGKILL.
KYARA_TRAINING_CANCEL_GRACE = env_float("KYARA_TRAINING_CANCEL_GRACE", 10.0)

# --- Plugins -------------------------------------------------------------------------------------
KYARA_SOURCE_ROOTS = json.loads(env_str("KYARA_SOURCE_ROOTS", "{}") or "{}")

# --- Crawling ------------------------------------------------------------------------------------
# Sites see this User-Agent; Danbooru and others ask for a way to reach whoever runs the crawler.
KYARA_CRAWL_CONTACT = env_str("KYARA_CRAWL_CONTACT", "kyara-admin@example.invalid")
KYARA_CRAWL_USER_AGENT = env_str(
    "KYARA_CRAWL_USER_AGENT", f"Kyara/0.1 (anime character dataset crawler; contact: {KYARA_CRAWL_CONTACT})"
)
# Private, loopback, link-local and reserved addresses are refused (SSRF). "1" allows them all (local
# mirrors); a comma-separated list of networks ("127.0.0.1/32") allows only those (tests).
_allow_private = env_str("KYARA_CRAWL_ALLOW_PRIVATE").strip()
KYARA_CRAWL_ALLOW_PRIVATE: bool | list[str] = (
    _allow_private.lower() in {"1", "true", "yes", "on"}
    if _allow_private.lower() in {"", "0", "1", "true", "false", "yes", "no", "on", "off"}
    else [net.strip() for net in _allow_private.split(",") if net.strip()]
)
# Per-source credentials: {"danbooru": {"login": "...", "api_key": "..."}, "gelbooru": {"user_id": "...", ...}}.
KYARA_CRAWL_CREDENTIALS = json.loads(env_str("KYARA_CRAWL_CREDENTIALS", "{}") or "{}")
# Per-source politeness overrides: {"safebooru": {"rate": 0.5, "concurrency": 1}}; adapters declare defaults.
KYARA_CRAWL_POLITENESS = json.loads(env_str("KYARA_CRAWL_POLITENESS", "{}") or "{}")
KYARA_CRAWL_JITTER = env_float("KYARA_CRAWL_JITTER", 0.25)  # fraction of the interval added at random
KYARA_CRAWL_THREADS = env_int("KYARA_CRAWL_THREADS", 4)  # download pool per job (capped by the source)
KYARA_CRAWL_CONNECT_TIMEOUT = env_float("KYARA_CRAWL_CONNECT_TIMEOUT", 10.0)
KYARA_CRAWL_READ_TIMEOUT = env_float("KYARA_CRAWL_READ_TIMEOUT", 30.0)
KYARA_CRAWL_RETRIES = env_int("KYARA_CRAWL_RETRIES", 3)
KYARA_CRAWL_BACKOFF = env_float("KYARA_CRAWL_BACKOFF", 2.0)  # seconds, doubled per attempt
KYARA_CRAWL_MAX_RETRY_AFTER = env_float("KYARA_CRAWL_MAX_RETRY_AFTER", 300.0)  # cap on a 429/503 wait
KYARA_CRAWL_MAX_BYTES = env_int("KYARA_CRAWL_MAX_BYTES", KYARA_MAX_IMAGE_BYTES)  # per download
KYARA_CRAWL_STOP_AFTER_KNOWN = env_int("KYARA_CRAWL_STOP_AFTER_KNOWN", 20)  # consecutive known posts
KYARA_CRAWL_MAX_PAGES = env_int("KYARA_CRAWL_MAX_PAGES", 50)  # listing pages per job
KYARA_CRAWL_PAGE_SIZE = env_int("KYARA_CRAWL_PAGE_SIZE", 100)
KYARA_CRAWL_LOCAL_ROOT = Path(env_str("KYARA_CRAWL_LOCAL_ROOT", str(DATA_DIR / "incoming"))).resolve()
# Sources a collection plan splits a character's quota over, when the caller names none.
KYARA_CRAWL_PLAN_SOURCES = env_list("KYARA_CRAWL_PLAN_SOURCES", "safebooru,safebooru_donmai")
# The highest content rating fetched: general, sensitive, questionable or explicit ("" fetches all).
# Candidates above it are refused before any download (reason "rating").
KYARA_CRAWL_MAX_RATING = env_str("KYARA_CRAWL_MAX_RATING", "")

# --- Evaluation ----------------------------------------------------------------------------------
# A character with fewer evaluated images than this is flagged "low support" instead of tiered (with
# 3 images accuracy still tells 0%, 33%, 67% and 100% apart, which the default tiers need).
KYARA_EVAL_MIN_SUPPORT = env_int("KYARA_EVAL_MIN_SUPPORT", 3)
# A character with fewer training images than this is flagged on the dataset and training pages: the
# model learns little from it, and its accuracy is measured on next to nothing.
KYARA_THIN_CHARACTER_IMAGES = env_int("KYARA_THIN_CHARACTER_IMAGES", 10)
# Images per forward pass of an evaluation (as /predict_batch), and how many are then timed one by one
# (as /predict) for the per-image latency p50/p95.
KYARA_EVAL_BATCH_SIZE = env_int("KYARA_EVAL_BATCH_SIZE", KYARA_PREDICT_BATCH_MAX)
KYARA_EVAL_LATENCY_IMAGES = env_int("KYARA_EVAL_LATENCY_IMAGES", 200)
KYARA_EVAL_CALIBRATION_BINS = env_int("KYARA_EVAL_CALIBRATION_BINS", 10)
# Temperature scaling (manage.py calibrate): at most this many images of the split a temperature is fitted on.
KYARA_CALIBRATION_IMAGES = env_int("KYARA_CALIBRATION_IMAGES", 5000)
KYARA_EVAL_CONFUSED_PAIRS = env_int("KYARA_EVAL_CONFUSED_PAIRS", 20)
# The suggested open-set threshold accepts this share of the correct answers on the val split.
KYARA_EVAL_THRESHOLD_KEEP = env_float("KYARA_EVAL_THRESHOLD_KEEP", 0.95)
# Evaluate every model version a training job registers, on this split (empty: off).
KYARA_EVAL_AFTER_TRAINING_SPLIT = env_str("KYARA_EVAL_AFTER_TRAINING_SPLIT", "test")

# --- Review ------------------------------------------------------------------------------------------
# An image whose claimed label the model contradicts with at least this top-1 probability is flagged.
KYARA_REVIEW_FLAG_CONFIDENCE = env_float("KYARA_REVIEW_FLAG_CONFIDENCE", 0.8)

# --- Improvement cycles (plan → crawl → review → freeze → train → evaluate → promote) ------------
# A new model replaces `default` only when its top-1 beats default's by this much on every test split compared.
KYARA_CYCLE_PROMOTE_MARGIN = env_float("KYARA_CYCLE_PROMOTE_MARGIN", 0.005)
# Every this many minutes a schedule advances every running cycle (0: no schedule); a child job that ends
# advances its cycle at once, the schedule catches what that missed and notices a finished review.
KYARA_CYCLE_ADVANCE_MINUTES = env_int("KYARA_CYCLE_ADVANCE_MINUTES", 1)
# A weekly schedule starts a cycle from the latest evaluation of `default` (off by default).
KYARA_CYCLE_WEEKLY = env_bool("KYARA_CYCLE_WEEKLY", False)
KYARA_CYCLE_WEEKLY_PROMOTE = env_bool("KYARA_CYCLE_WEEKLY_PROMOTE", False)  # the weekly cycle may promote
# Pending images one step sends through the model's suggestions (the auto-review) before it hands over.
KYARA_CYCLE_REVIEW_BATCH = env_int("KYARA_CYCLE_REVIEW_BATCH", 500)

# --- Logging -------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Redacted (apps.core.redaction): a logged URL or traceback keeps no API key or password either.
    "formatters": {"plain": {"()": "apps.core.redaction.RedactingFormatter",
                             "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": str(LOG_DIR / "kyara.log"),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 3,
            "formatter": "plain",
            "encoding": "utf-8",
        },
    },
    "root": {"handlers": ["console", "file"], "level": env_str("KYARA_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
