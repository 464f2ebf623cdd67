"""One page of a list, as every list use case returns it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """Items of one page, the total matching the filters, and whether more follow."""

    items: list[T]
    total: int
    has_more: bool


def page_of(rows: Sequence[T], total: int, limit: int) -> Page[T]:
    """Build a page from rows fetched with ``limit + 1`` (the extra row says more follow)."""
    return Page(items=list(rows[:limit]), total=total, has_more=len(rows) > limit)
