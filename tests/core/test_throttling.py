"""Throttles on every API view, on every log-in, and a client address that X-Forwarded-For cannot pick;
/health that says the database is down without quoting the driver's error."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.django_db, pytest.mark.backend]


def _api_views() -> dict[str, type]:
    """Every DRF view class the URL conf routes under /api/, by route."""
    from django.urls import URLResolver, get_resolver

    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif getattr(pattern.callback, "cls", None) is not None:
                yield prefix + str(pattern.pattern), pattern.callback.cls

    return {route: cls for route, cls in walk(get_resolver().url_patterns, "") if route.startswith("api/")}


def test_every_api_view_is_throttled_for_anonymous_and_signed_in_clients(throttle_rates, staff_user):
    from django.contrib.auth.models import AnonymousUser
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    views = _api_views()
    assert len(views) > 50 and any("predict" in route for route in views)
    for who in (AnonymousUser(), staff_user):
        request = Request(APIRequestFactory().get("/api/v1/"))
        request.user = who
        for route, cls in views.items():  # some throttle of the view counts this client's requests
            throttles = cls().get_throttles()
            assert any(t.get_cache_key(request, None) for t in throttles), (route, who, throttles)
    throttle_rates(anon="2/min", user="3/min")
    anonymous = APIClient()
    assert [anonymous.get("/api/v1/series/").status_code for _ in range(3)] == [200, 200, 429]
    refused = anonymous.get("/api/v1/characters/")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled" and refused["Retry-After"]
    signed_in = APIClient()
    signed_in.force_authenticate(staff_user)
    assert [signed_in.get("/api/v1/series/").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_x_forwarded_for_picks_the_bucket_only_behind_a_declared_proxy(throttle_rates, settings):
    throttle_rates(anon="1/min")
    client = APIClient()
    assert client.get("/api/v1/series/", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 200
    # No proxy declared (KYARA_NUM_PROXIES=0): a new header is the same client.
    assert client.get("/api/v1/series/", HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 429
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert client.get("/api/v1/series/", HTTP_X_FORWARDED_FOR="3.3.3.3").status_code == 200
    assert client.get("/api/v1/series/", HTTP_X_FORWARDED_FOR="3.3.3.3").status_code == 429


def test_the_token_endpoint_is_throttled(throttle_rates, staff_user):
    throttle_rates(login="3/min")
    client = APIClient()
    wrong = {"username": "curator", "password": "wrong"}
    assert [client.post("/api/v1/auth/token/", wrong).status_code for _ in range(3)] == [400, 400, 400]
    refused = client.post("/api/v1/auth/token/", {"username": "curator", "password": "pw-curator"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    other = APIClient(REMOTE_ADDR="10.1.2.3")  # another address still logs in
    assert other.post("/api/v1/auth/token/", {"username": "curator", "password": "pw-curator"}).json()["token"]


@pytest.mark.parametrize("path", ["/login/", "/admin/login/", "/api/v1/auth/login/"])
def test_every_log_in_form_is_throttled(path, throttle_rates, client, staff_user):
    throttle_rates(login="2/min")
    assert client.get(path).status_code == 200  # reading the form costs nothing
    codes = [client.post(path, {"username": "curator", "password": "wrong"}).status_code for _ in range(2)]
    assert codes == [200, 200]  # the form again, with its error
    refused = client.post(path, {"username": "curator", "password": "pw-curator"})
    assert refused.status_code == 429 and "Too many log-in attempts" in refused.content.decode()
    assert int(refused["Retry-After"]) > 0 and "_auth_user_id" not in client.session


@pytest.fixture
def unreachable_database(db):
    """The default connection replaced by a real PostgreSQL connection to a closed port, with credentials
    (put back before the test database's own teardown)."""
    from django.db import connections
    from django.db.backends.postgresql.base import DatabaseWrapper

    config = {**connections.settings["default"], "ENGINE": "django.db.backends.postgresql", "NAME": "kyara",
              "USER": "kyara_admin", "PASSWORD": "hunter2-secret", "HOST": "127.0.0.1", "PORT": "1", "OPTIONS": {},
              "CONN_MAX_AGE": 0}
    broken = DatabaseWrapper(config, "default")
    original = connections["default"]
    connections._connections.default = broken
    yield broken
    connections._connections.default = original


@pytest.mark.parametrize("path", ["/healthz", "/health", "/api/v1/health"])
def test_health_does_not_quote_the_database_error(path, unreachable_database, client):
    from apps.core.api import DATABASE_DOWN

    response = client.get(path)
    body = response.json()
    assert response.status_code == 503 and body["ready"] is False and body["live"] is True
    assert body["database"] == DATABASE_DOWN
    text = response.content.decode()
    assert "127.0.0.1" not in text and "kyara_admin" not in text and "port 1" not in text.lower()
