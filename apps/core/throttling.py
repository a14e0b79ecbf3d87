"""Throttles beyond DRF's per-anonymous and per-user defaults (``DEFAULT_THROTTLE_CLASSES``).

A client is told apart by DRF's ``get_ident``: the peer address, or the address a trusted proxy put in
X-Forwarded-For when ``KYARA_NUM_PROXIES`` says how many proxies stand in front (0 by default, so a
client cannot pick its own bucket by sending the header). Rates live in ``REST_FRAMEWORK``'s
``DEFAULT_THROTTLE_RATES`` and are read when a request is checked, so a settings change takes effect.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class _LiveRatesThrottle(SimpleRateThrottle):
    """DRF binds THROTTLE_RATES at import; reading them per request lets settings (and tests) change them."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AnonThrottle(_LiveRatesThrottle):
    """Every request of an anonymous client (scope ``anon``)."""

    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class UserThrottle(_LiveRatesThrottle):
    """Every request of a signed-in client (scope ``user``)."""

    scope = "user"

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class LoginRateThrottle(_LiveRatesThrottle):
    """Log-in and token attempts per client address, whoever they claim to be."""

    scope = "login"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class ModelLoadThrottle(_LiveRatesThrottle):
    """Requests that make this process load a model (seconds of CPU, hundreds of MB), per client.
    Staff are not counted: they promote and warm models on purpose."""

    scope = "model_load"

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if user.is_staff:
                return None
            ident = f"user-{user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


def throttle_login_posts(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Count every POST to a form log-in view (the pages', the admin's, the browsable API's) against
    ``LoginRateThrottle``; past the rate a 429 with Retry-After, before the password is checked."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            throttle = LoginRateThrottle()
            if not throttle.allow_request(request, None):
                wait = math.ceil(throttle.wait() or 1)
                response = HttpResponse(f"Too many log-in attempts from this address; try again in {wait} seconds.\n",
                                        status=429, content_type="text/plain; charset=utf-8")
                response["Retry-After"] = str(wait)
                return response
        return view(request, *args, **kwargs)

    return wrapped
