"""List paging: ``limit`` (1-1000, default 100) with ``offset``, or an opaque keyset ``cursor``.

A cursor wraps the sort key of the last item returned, so the next page
starts after it even if rows were inserted in between, which an offset cannot.
An empty ``cursor`` is no cursor (the first page); one this server did not give
out is a 422 ``invalid_cursor`` on every list (``invalid_cursor()``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from conveyor.domain import jsonsafe
from conveyor.domain.errors import InvalidCursor
from conveyor.services.pagination import Page

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# The largest integer the databases store (a signed 64-bit integer): a bigger
# offset, sequence number or cursor key is a 422, not an overflow in the driver.
MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class PageParams:
    """The paging parameters of one list request."""

    limit: int
    offset: int
    cursor: str | None


def page_params(
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="page size"),
    offset: int = Query(0, ge=0, le=MAX_INT, description="items to skip"),
    cursor: str | None = Query(
        None,
        description="`next_cursor` of the previous page (instead of `offset`); "
        "empty: the first page",
    ),
) -> PageParams:
    """Read and check the paging query parameters."""
    # An empty cursor is the first page: a client that pastes the first page's
    # (absent) cursor back in gets what it asked for, not an error.
    cursor = cursor or None
    if cursor is not None and offset:
        raise _invalid("offset", "give either `offset` or `cursor`, not both", "cursor_with_offset")
    return PageParams(limit=limit, offset=offset, cursor=cursor)


def _invalid(param: str, msg: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", param), "msg": msg, "type": kind}])


def invalid_cursor(detail: str | None = None) -> InvalidCursor:
    """The 422 ``invalid_cursor`` for a ``cursor`` parameter, with its ``errors`` item."""
    exc = InvalidCursor(detail)
    exc.extra["errors"] = [{"loc": ["query", "cursor"], "msg": exc.detail, "type": exc.code}]
    return exc


def encode_cursor(key: str | int) -> str:
    """An opaque cursor for a sort key."""
    return base64.urlsafe_b64encode(json.dumps({"k": key}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[T]) -> T | None:
    """The sort key in ``cursor`` (None if none); 422 ``invalid_cursor`` if it is not ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)["k"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid_cursor() from None
    if type(key) is not kind:
        raise invalid_cursor()
    # A forged cursor can hold what no database takes: a huge number, a lone surrogate.
    if isinstance(key, int) and not -MAX_INT <= key <= MAX_INT:
        raise invalid_cursor()
    if isinstance(key, str) and jsonsafe.find_flaw(key) is not None:
        raise invalid_cursor()
    return key


def page_body(
    page: Page[dict[str, Any]], params: PageParams, sort_key: Callable[[dict[str, Any]], str | int]
) -> dict[str, Any]:
    """The wire form of a page: ``{items, total, limit, offset, next_cursor}``."""
    next_cursor = encode_cursor(sort_key(page.items[-1])) if page.has_more and page.items else None
    return {
        "items": page.items,
        "total": page.total,
        "limit": params.limit,
        "offset": params.offset,
        "next_cursor": next_cursor,
    }
