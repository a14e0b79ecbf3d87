"""The OpenAPI schema tells the truth about errors: every operation documents the error responses it can
give, each with the one error body (``{"error": {"code", "message", "details"}}``, apps/core/api.py).

Which codes an operation can answer follows from what it is, the same way for every view:

- 400: a request body, query parameters or filters that do not validate;
- 403: credentials that do not authenticate, or a change by someone who is not staff (no view answers
  401: session authentication comes first and has no challenge to send);
- 404: a path naming something that is not there, or a page past the end of a list;
- 409: a change that conflicts with the state of things (still referenced, not cancellable, exists);
- 411, 413 and 415: a body without a length, over its limit (apps/core/limits.py), or of a type the view
  does not parse;
- 429: past a throttle (every API view has one);
- 503: what needs a model or the database when there is none to use (declared per view, ``extend_schema``).

A view documents anything more particular with ``extend_schema(responses=...)``; what it says wins.
"""
from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers

ERROR_DESCRIPTIONS = {
    "400": "The request does not validate; the message says what to change.",
    "403": "Not allowed: the credentials do not authenticate, or the change needs a staff account.",
    "404": "Nothing there (or a page past the end).",
    "409": "Conflicts with the current state (still referenced, not in a state that allows it, exists).",
    "411": "The request body was sent without a Content-Length (chunked); send its length.",
    "413": "The request body is over its limit (KYARA_MAX_REQUEST_BYTES, or the endpoint's own).",
    "415": "The request body's media type is not one the endpoint reads.",
    "429": "Too many requests from this client; Retry-After says when to try again.",
    "503": "No model (or database) is available to answer.",
}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable reason, e.g. invalid, not_found, throttled")
    message = serializers.CharField(help_text="What happened and what to do, for a person")
    details = serializers.JSONField(required=False, help_text="Fields in error, limits, ids involved")


class ErrorResponseSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class AutoSchema(SpectacularAutoSchema):
    def _error_codes(self) -> list[str]:
        codes = ["400", "403", "429"]
        if "{" in self.path or self._is_list_view():
            codes.append("404")
        if self.method in WRITE_METHODS:
            codes += ["404", "409"]
            if self.method != "DELETE":
                codes += ["411", "413", "415"]
        return sorted(set(codes))

    def _one_object_list(self) -> bool:
        # A ``list`` that answers one object (GET /api/v1/models: aliases and versions) says so on its view.
        return getattr(self.view, "list_is_one_object", False) and getattr(self.view, "action", None) == "list"

    def _is_list_view(self, serializer=None) -> bool:
        return False if self._one_object_list() else super()._is_list_view(serializer)

    def get_operation_id(self) -> str:
        operation_id = super().get_operation_id()
        if self._one_object_list() and operation_id.endswith("_retrieve"):  # still the list, by name too
            operation_id = operation_id.removesuffix("_retrieve") + "_list"
        return operation_id

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorResponseSerializer, code, direction=direction)
                responses[code]["description"] = ERROR_DESCRIPTIONS[code]
        return responses
