"""Shapes shared by every resource."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int = Field(description="how many items match, over all pages")
    limit: int = Field(description="the page size asked for")
    offset: int = Field(description="how many matching items were skipped")
    next_cursor: str | None = Field(
        description="pass as `cursor` to get the next page; null on the last page"
    )
