"""Production settings: DEBUG off, secure headers and cookies, the secret key from the environment.

``make serve`` uses these on one machine with nothing to set (scripts/run.sh): ``KYARA_LOCAL_SECRET=1``
takes the key generated once into ``KYARA_DATA_DIR`` (as ``make run`` does; every process of the
instance reads the same file), and on a loopback address ``KYARA_HTTPS=0`` serves plain HTTP, because
there is no TLS to redirect to. Several hosts must share one ``DJANGO_SECRET_KEY`` (django-q2 signs
tasks with it) and serve over HTTPS, directly or behind a proxy (``KYARA_NUM_PROXIES``).
"""
import ipaddress

from django.core.exceptions import ImproperlyConfigured

from ._secret import secret_key_for
from .base import *  # noqa: F401,F403
from .base import ALLOWED_HOSTS, DATA_DIR, SECRET_KEY, env_bool, env_int

if not SECRET_KEY and env_bool("KYARA_LOCAL_SECRET"):
    SECRET_KEY = secret_key_for(DATA_DIR)
if not SECRET_KEY or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY to a random value of at least 50 characters "
                               "(or KYARA_LOCAL_SECRET=1 on a single machine: make serve does).")

DEBUG = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


HTTPS = env_bool("KYARA_HTTPS", True)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("KYARA_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("KYARA_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
else:
    # Plain HTTP, allowed only where nobody else can listen: every host name must be a loopback one.
    exposed = [host for host in ALLOWED_HOSTS if not _is_loopback(host)]
    if exposed:
        raise ImproperlyConfigured(f"KYARA_HTTPS=0 serves plain HTTP, which is for 127.0.0.1/localhost only; "
                                   f"DJANGO_ALLOWED_HOSTS also names {', '.join(exposed)}. Serve those over HTTPS.")
    # The four HTTPS checks of `check --deploy` do not apply to a server only this machine can reach.
    SILENCED_SYSTEM_CHECKS = ["security.W004", "security.W008", "security.W012", "security.W016"]
