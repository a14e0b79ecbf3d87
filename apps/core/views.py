import logging

from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.authtoken.views import ObtainAuthToken

from .api import DATABASE_DOWN, error_body
from .charts import ChartLibraryMissing, plotly_js_bytes, plotly_version
from .throttling import LoginRateThrottle

logger = logging.getLogger(__name__)


def database_status() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001
        logger.exception("Health check: the database did not answer")
        return DATABASE_DOWN
    return "ok"


def health(request):
    """Liveness and database readiness of this web process."""
    database = database_status()
    ready = database == "ok"
    return JsonResponse({"live": True, "ready": ready, "database": database}, status=200 if ready else 503)


class ObtainAuthTokenView(ObtainAuthToken):
    """POST a username and password, get the user's API token; attempts are throttled per address."""

    throttle_classes = [LoginRateThrottle]


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.META.get("HTTP_ACCEPT", "")


def bad_request(request, exception, template_name="400.html"):
    """Django's 400 for what reaches no view (a body over DATA_UPLOAD_MAX_MEMORY_SIZE read by a form or
    the CSRF check, a bad Host): a body over its limit is a 413, and the API answers in JSON."""
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(error_body("request_too_large", f"{exception or 'The request body is too large.'}"),
                            status=413)
    if _wants_json(request):
        return JsonResponse(error_body("bad_request", "The request could not be read."), status=400)
    return defaults.bad_request(request, exception, template_name)


def page_not_found(request, exception, template_name="404.html"):
    if _wants_json(request):
        return JsonResponse(error_body("not_found", f"Nothing at {request.path}; GET /api/v1/schema/ lists "
                                       "the API's paths."), status=404)
    return defaults.page_not_found(request, exception, template_name)


def server_error(request, template_name="500.html"):
    if _wants_json(request):
        return JsonResponse(error_body("server_error", "The server failed to answer this request; the error is "
                                       "in the server log."), status=500)
    return defaults.server_error(request, template_name)


def plotly_js(request, version: str):
    """The chart library, served by Kyara itself under a versioned URL (cached for good, gzipped)."""
    if version != plotly_version():
        raise Http404("Unknown chart library version.")
    try:
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        body = plotly_js_bytes(gzipped)
    except ChartLibraryMissing as exc:
        return HttpResponse(f"console.error({str(exc)!r});", content_type="text/javascript", status=503)
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    if gzipped:
        response["Content-Encoding"] = "gzip"
    response["Vary"] = "Accept-Encoding"
    response["Cache-Control"] = "public, max-age=31536000, immutable"  # the URL changes with the version
    return response
