import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
django_application = get_asgi_application()

from apps.core.limits import ASGIBodyLimit  # noqa: E402 - after Django is set up

# Bodies over KYARA_MAX_REQUEST_BYTES are refused before Django's ASGI handler spools them (apps/core/limits.py).
application = ASGIBodyLimit(django_application)
