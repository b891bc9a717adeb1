"""Query filters shared by the list routes (devices, alerts, incidents): bounded text parameters
and multi-valued enum filters (``?state=active&state=acknowledged`` or ``?state=active,acknowledged``).

A value outside the enum is a 422 naming the parameter (``query.state``), in the one error
shape (errors.py)."""

from __future__ import annotations

import enum
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Query
from pydantic import StringConstraints

from .errors import show

E = TypeVar("E", bound=enum.StrEnum)

TEXT_MAX = 200  # a device id, a location, a rule id …
MAX_VALUES = 20  # values of one multi-valued parameter

Item = Annotated[str, StringConstraints(max_length=TEXT_MAX)]


def text(description: str) -> Any:
    """A single optional text filter, at most ``TEXT_MAX`` characters:
    ``location: Annotated[str | None, text("…")] = None``."""
    return Query(min_length=1, max_length=TEXT_MAX, description=description)


def values(description: str, alias: str | None = None) -> Any:
    """A multi-valued filter (repeat the parameter or separate values with commas):
    ``status: Annotated[MultiValue, values("…")] = None``."""
    return Query(
        alias=alias, max_length=MAX_VALUES,
        description=f"{description}; repeat it or separate values with commas",
    )  # fmt: skip


MultiValue = list[Item] | None


class ParamError(HTTPException):
    """A 422 naming the query parameter at fault (errors.py reads ``field``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(422, f"{field}: {message}")
        self.field = field


def parse_multi(raw: list[str] | None, kind: type[E], name: str) -> frozenset[E] | None:
    """The set of ``kind`` values of a multi-valued parameter; None when it is absent or empty."""
    if not raw:
        return None
    out: set[E] = set()
    allowed = [str(m) for m in kind]
    for chunk in raw:
        for v in chunk.split(","):
            v = v.strip()
            if not v:
                continue
            try:
                out.add(kind(v))
            except ValueError:
                raise ParamError(
                    f"query.{name}", f"{show(v, 40)!r} is not one of {', '.join(allowed)}"
                ) from None
    return frozenset(out) or None
