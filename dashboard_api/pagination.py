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
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import HTTPException, Query
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

