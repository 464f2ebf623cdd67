"""Shapes shared by every resource."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


def _page_description(schema: dict[str, Any]) -> None:
    # A parametrised generic (`Page[ApiKey]`) is a new class without the
    # docstring, so its schema would have no description.
    schema.setdefault("description", Page.__doc__)


class Page(BaseModel, Generic[T]):
    """One page of a list: the items, and what to ask for the next page."""

    model_config = ConfigDict(json_schema_extra=_page_description)

    items: list[T] = Field(description="this page's items, in the list's order")
    total: int = Field(description="how many items match, over all pages")
    limit: int = Field(description="the page size asked for (`limit`, default 100)")
    offset: int = Field(
        description="how many matching items were skipped (`offset`; 0 with a `cursor`)"
    )
    next_cursor: str | None = Field(
        description="pass as `cursor` to get the next page; null on the last page"
    )
