"""Cursor pagination, one convention for every list of the API.

A list route takes ``limit`` (1–1000, default 100) and ``cursor`` (opaque, from the previous
page's ``next_cursor``) and answers a ``Page``: ``{"items": [...], "next_cursor": "…" | null}``.
A cursor is the sort key of the last item served, base64url-encoded JSON, so a page never
repeats or skips an item that stays in the list while the client walks it (items added before
the cursor are not seen, as with any keyset pagination). A cursor that cannot be read is a 422
naming ``query.cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many items per page")]
Cursor = Annotated[
    str | None, Query(max_length=1000, description="`next_cursor` of the previous page; omit for the first page")
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class CursorError(HTTPException):
    def __init__(self) -> None:
        super().__init__(422, "the cursor cannot be read: pass `next_cursor` of the previous page as it came")
        self.field = "query.cursor"  # the error body's field (errors.py)


def encode_cursor(key: Sequence[Any]) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> list[Any] | None:
    """The key of a cursor; None for no cursor; CursorError (422, field ``query.cursor``) for one
    that is not eqmon's."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CursorError() from None
    if not isinstance(key, list):
        raise CursorError()
    return key


def _comparable(a: Sequence[Any], b: Sequence[Any]) -> bool:
    return len(a) == len(b) and all(
        (x is None) == (y is None) and (x is None or type(x) is type(y) or {type(x), type(y)} <= {int, float})
        for x, y in zip(a, b, strict=True)
    )


def paginate(items: Iterable[T], key: Callable[[T], Sequence[Any]], limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of ``items`` (in memory) in the order of ``key`` (a tuple of str/int/float with no
    None, unique per item): those after the cursor's key, at most ``limit``."""
    after = decode_cursor(cursor)
    keyed = sorted(((list(key(i)), i) for i in items), key=lambda p: p[0])
    if after is not None:
        if keyed and not _comparable(after, keyed[0][0]):
            raise CursorError()
        keyed = [p for p in keyed if p[0] > after]
    page = keyed[:limit]
    more = len(keyed) > limit
    return {"items": [i for _, i in page], "next_cursor": encode_cursor(page[-1][0]) if more and page else None}



def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def json_bytes(content: Any) -> bytes:
    """``content`` (plain JSON types; str enums as their values) encoded, a non-finite float as
    null (as pydantic writes it)."""
    try:
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        body = json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return body.encode("utf-8")


def json_response(content: Any, status_code: int = 200) -> Response:
    """``content`` (plain JSON types; str enums as their values) as a JSON response, without
    FastAPI's validation of the return value against the route's ``response_model``: for the
    lists the dashboard and tablets poll, whose views state.py and listing.py build to the
    models' shape (the schemathesis test checks every response against the schema). A
    non-finite float becomes null, as pydantic would write it. Measured: the validation and
    serialisation were 30 % of the server's CPU under bench/api_load.py."""
    return Response(json_bytes(content), status_code=status_code, media_type="application/json")


def cached_page(state: Any, key: tuple[Any, ...], build: Callable[[], Any]) -> Response:
    """The JSON response of a list page from ``state.views`` (viewcache.py), built and encoded
    by ``build`` when it is not there."""
    body = state.views.get(key)
    if body is None:
        body = json_bytes(build())
        state.views.put(key, body)
    return Response(body, media_type="application/json")
