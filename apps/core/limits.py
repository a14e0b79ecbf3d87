"""Limits at the edge: a request body is bounded before anything reads it, and while it is read.

``RequestBodyLimitMiddleware`` runs first. A body whose Content-Length is over the limit is answered
with a 413 before a byte of it is read (gunicorn then drains at most 64 KiB and closes the connection),
so a multi-GB upload costs neither memory nor temporary files. What is read goes through a counting
stream that stops at the limit whatever the server passes on. The limit is
``KYARA_MAX_REQUEST_BYTES`` for bodies with files (multipart) and Django's own
``DATA_UPLOAD_MAX_MEMORY_SIZE`` for every other body (DRF's JSON and form parsers read those whole);
a view may ask for less with a ``request_body_limit`` attribute (a number, or a callable returning one),
as the predict endpoints do. A body without a length (``Transfer-Encoding: chunked``) is refused with a
411, because Django would silently read it as empty.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

from .api import error_body

# Room for a multipart body's boundaries, part headers and small form fields around the files.
MULTIPART_SLACK_BYTES = 64 * 1024


class RequestBodyTooLarge(RequestDataTooBig):
    """Reading the body went past its limit. A RequestDataTooBig, so code that handles Django's own
    (the predict views do) handles this one too."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        self.limit = limit
        self.declared = declared
        size = f"{declared:,} bytes" if declared is not None else f"over {limit:,} bytes"
        super().__init__(f"The request body is {size}; this endpoint accepts at most {limit:,} bytes.")


def _answer(status: int, code: str, message: str, *, length: bool = True, **details: Any) -> JsonResponse:
    # Answered before the rest of the stack (CommonMiddleware would add the length): a length lets a client
    # that is still sending read the whole answer before the server closes the connection.
    response = JsonResponse(error_body(code, message, **details), status=status)
    if length:
        response["Content-Length"] = str(len(response.content))
    return response


def too_large_response(exc: RequestBodyTooLarge) -> JsonResponse:
    return _answer(413, "request_too_large", str(exc), limit=exc.limit)


class _CappedStream:
    """A file-like view of the request body that raises once more than ``limit`` bytes were read."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self.limit = limit
        self.read_bytes = 0
        self.exceeded: RequestBodyTooLarge | None = None

    def _count(self, data: bytes) -> bytes:
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            self.exceeded = RequestBodyTooLarge(self.limit)
            raise self.exceeded
        return data

    def read(self, size: int = -1, /) -> bytes:
        # Never ask the server for more than one byte past the limit in one go.
        room = self.limit - self.read_bytes + 1
        size = room if size is None or size < 0 else min(size, room)
        return self._count(self._stream.read(size))

    def readline(self, size: int = -1, /) -> bytes:
        room = self.limit - self.read_bytes + 1
        size = room if size is None or size < 0 else min(size, room)
        return self._count(self._stream.readline(size))

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def __iter__(self):
        return iter(self.readline, b"")

    def readlines(self) -> list[bytes]:
        return list(self)


def _declared_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return None


def _is_multipart(request: HttpRequest) -> bool:
    return request.META.get("CONTENT_TYPE", "").lower().startswith("multipart/")


def default_limit(request: HttpRequest) -> int:
    if _is_multipart(request):
        return settings.KYARA_MAX_REQUEST_BYTES
    form_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return settings.KYARA_MAX_REQUEST_BYTES if form_limit is None else min(form_limit, settings.KYARA_MAX_REQUEST_BYTES)


def _view_limit(view_func: Callable) -> int | None:
    owner = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None) or view_func
    limit = getattr(owner, "request_body_limit", None)
    if callable(limit):
        limit = limit()
    return int(limit) if limit is not None else None


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = _declared_length(request)
        if declared is None or declared < 0:
            return _answer(400, "bad_content_length", "The Content-Length header is not a whole number.")
        if declared == 0 and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            # No length on the answer: a server that cannot skip the chunked body then closes the connection.
            return _answer(411, "length_required", "Send the body with a Content-Length header; chunked request "
                           "bodies are not read.", length=False)
        limit = default_limit(request)
        if declared > limit:
            return too_large_response(RequestBodyTooLarge(limit, declared))
        stream = request._stream = _CappedStream(request._stream, limit)
        request.body_limit_stream = stream
        response = self.get_response(request)
        if stream.exceeded is not None and response.status_code != 413:
            # Whoever met the limit answered something else (a form's 400, a swallowed error): the truth is 413.
            return too_large_response(stream.exceeded)
        return response

    def process_view(self, request: HttpRequest, view_func: Callable, view_args, view_kwargs) -> HttpResponse | None:
        limit = _view_limit(view_func)
        stream = getattr(request, "body_limit_stream", None)
        if limit is None or stream is None or limit >= stream.limit:
            return None
        stream.limit = limit
        declared = _declared_length(request) or 0
        if declared > limit:
            return too_large_response(RequestBodyTooLarge(limit, declared))
        return None


class ASGIBodyLimit:
    """The same limit for the ASGI entry point (config/asgi.py). Django's ASGI handler reads a whole body
    before any middleware runs, so the limit must stand in front of it: a declared length over it is a
    413 at once, and a streamed body (no length, or one that lies) is cut off once it passes the limit,
    with the same 413, instead of being spooled whole."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.KYARA_MAX_REQUEST_BYTES
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self._refuse(send, RequestBodyTooLarge(limit, int(declared) if declared.isdigit() else None))
        state = {"received": 0, "over": False, "started": False}

        async def limited_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True  # Django sees the client go away and stops reading
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, tracked_send)
        if state["over"] and not state["started"]:
            await self._refuse(send, RequestBodyTooLarge(limit))

    @staticmethod
    async def _refuse(send, exc: RequestBodyTooLarge) -> None:
        response = too_large_response(exc)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in response.items()]})
        await send({"type": "http.response.body", "body": response.content})
