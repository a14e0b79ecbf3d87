"""API plumbing shared by every app: errors as JSON with a code and a message a person can act on."""
from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

# What a client sees when the database does not answer (/health, /api/v1/health); the reason, which may
# name hosts, users or paths, goes to the server log only.
DATABASE_DOWN = "error: the database did not answer (details in the server log)"


class ServiceError(Exception):
    """Raised by a service when a request cannot be carried out; the API turns it into JSON."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, message: str, *, status_code: int | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        if status_code is not None:
            self.status_code = status_code


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    return body


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def _protected_message(exc: ProtectedError | RestrictedError) -> str:
    counts = Counter(obj._meta.verbose_name_plural for obj in exc.protected_objects if hasattr(obj, "_meta"))
    held = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "other records"
    return f"Cannot delete it: {held} still refer to it. Delete or move those first (or deactivate it instead)."


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, **exc.details), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):  # apps.core.limits' cap, or Django's DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(error_body("request_too_large", str(exc) or "The request body is too large."), status=413)
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return Response(error_body("too_many_fields", str(exc)), status=400)
    if isinstance(exc, (ProtectedError, RestrictedError)):
        return Response(error_body("protected", _protected_message(exc)), status=409)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return Response(error_body("invalid", _flatten(detail), fields=detail), status=400)
    if isinstance(exc, Http404):  # DRF turns these into its own exceptions; so do we, to shape their body
        exc = exceptions.NotFound(str(exc) if str(exc) and "matches the given query" not in str(exc) else None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "invalid"
        response.data = error_body(code, _flatten(exc.detail), **({"fields": exc.detail} if code == "invalid" else {}))
    return response
