"""One page of a list, as every list use case returns it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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


# Lists count their matches only this far: an exact count of a huge list would
# cost more than the page itself.
TOTAL_CAP = 10_000


def capped_page(
    rows: Sequence[Mapping[Any, Any]],
    counted: int,
    *,
    limit: int,
    offset: int,
    view: Callable[[Any], dict[str, Any]],
    position_column: str,
) -> dict[str, Any]:
    """A keyset-ready page from rows fetched with ``limit + 1`` and a count capped at the cap.

    Past the cap ``total`` is a lower bound and ``total_exact`` false; ``last``
    is the keyset position (``position_column``, id) of the page's last item when
    more follow.
    """
    more = len(rows) > limit
    page = rows[:limit]
    exact = counted <= TOTAL_CAP
    total = counted if exact else max(TOTAL_CAP, offset + len(page) + int(more))
    last = (page[-1][position_column], str(page[-1]["id"])) if more and page else None
    return {"items": [view(r) for r in page], "total": total, "total_exact": exact, "last": last}
