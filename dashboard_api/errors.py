"""One JSON shape for every error the API returns:

    {"error": {"code": "validation_error", "message": "query.limit: Input should be …", "field": "query.limit"}}

Codes: ``validation_error`` (422), ``malformed_json`` and ``bad_request`` (400), ``unauthorized``
(401), ``forbidden`` (403), ``not_found`` (404), ``method_not_allowed`` (405), ``conflict`` (409),
``payload_too_large`` (413), ``too_many_requests`` (429), ``not_implemented`` (501),
``unavailable`` (503),
``internal_error`` (500: a generic message; the details go to the log only), and ``http_<status>``
for any other status. Error responses never echo request input as sent: anything taken from the
request (a path parameter in a message, a field name) is cut to ``ECHO_MAX`` characters and
made valid text first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .models import ErrorResponse

log = logging.getLogger("eqmon.api")

ECHO_MAX = 100  # characters of request input an error message may repeat
MESSAGE_MAX = 300
MAX_BODY_BYTES = 64 * 1024  # the largest request body: an acknowledgement is a few hundred bytes

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}

# Documented on every operation (merged into each route's responses by the routers).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "No bearer token, or an unknown, expired or revoked one",
    },
    403: {"model": ErrorResponse, "description": "The caller's role lacks the scope this needs"},
    422: {"model": ErrorResponse, "description": "A parameter or the body is invalid"},
    500: {"model": ErrorResponse, "description": "Internal error (details in the service log)"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No such resource"}}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON"},
    413: {"model": ErrorResponse, "description": f"The body is larger than {MAX_BODY_BYTES} bytes"},
}


def show(text: object, limit: int = ECHO_MAX) -> str:
    """``text`` as safe to repeat in an error: at most ``limit`` characters, valid Unicode
    (lone surrogates and other unencodable characters escaped)."""
    s = text if isinstance(text, str) else str(text)
    if len(s) > limit:
        s = s[:limit] + "…"
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(status: int, message: str, field: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code or CODES.get(status, f"http_{status}"),
            "message": show(message, MESSAGE_MAX),
            "field": None if field is None else show(field),
        }
    }


def error_response(
    status: int, message: str, field: str | None = None, *, code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, field, code), status_code=status, headers=headers)


def _field(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return error_response(422, "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return error_response(400, "the body is not valid JSON", "body", code="malformed_json")
    field = _field(first.get("loc", ()))
    # pydantic's messages name the rule broken, not the input ("Input should be less than or
    # equal to 1000"); the input itself is never repeated.
    message = f"{show(field)}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return error_response(422, message, field)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status in (204, 304) or status < 400:  # no body allowed / not an error
        return Response(status_code=status, headers=exc.headers)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if status == 400 and detail == "There was an error parsing the body":
        return error_response(400, "the body cannot be read as UTF-8 JSON", "body", code="malformed_json")
    defaults = {
        404: "not found",
        405: f"method {request.method} not allowed here",
        413: f"request body larger than {MAX_BODY_BYTES} bytes",
    }
    message = detail if detail else defaults.get(status, f"HTTP {status}")
    if status == 405:
        message = defaults[405]
    # an HTTPException may name the request part at fault (``field``: e.g. query.cursor)
    field = "body" if status == 413 else getattr(exc, "field", None)
    return error_response(status, message, field, headers=exc.headers)


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class GuardMiddleware:
    """Bounds request bodies (413) and turns any exception the app lets out into the generic
    500 error body (the traceback goes to the log, never to the client)."""

    def __init__(
        self, app: ASGIApp, max_body: int = MAX_BODY_BYTES, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.larger = dict(larger or {})  # exact path -> its own limit (e.g. a CSV import)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_body = self.larger.get(scope.get("path", ""), self.max_body)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            await error_response(413, f"request body larger than {max_body} bytes", "body")(
                scope, receive, send
            )
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise _BodyTooLarge(max_body)  # FastAPI re-raises HTTPExceptions from reading the body
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _BodyTooLarge:
            if started:
                raise
            await error_response(413, f"request body larger than {max_body} bytes", "body")(
                scope, receive, send
            )
        except Exception:
            log.exception("API request %s %s failed", scope.get("method"), show(scope.get("path", "")))
            if started:
                raise  # too late for an error body: the server closes the connection
            await error_response(500, "internal error; the details are in the eqmon service log")(
                scope, receive, send
            )


def install(app: FastAPI, larger_bodies: Mapping[str, int] | None = None) -> None:
    """Install eqmon's error handling on ``app``; ``larger_bodies``: the few paths (exact) that
    take a larger body than ``MAX_BODY_BYTES``, with their limit."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(GuardMiddleware, larger=larger_bodies)
