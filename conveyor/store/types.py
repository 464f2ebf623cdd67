"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pydantic_core
from sqlalchemy import JSON, DateTime, Dialect, TypeDecorator, Uuid
from sqlalchemy.dialects.postgresql import JSONB

from conveyor.domain import jsonsafe

log = logging.getLogger("conveyor.store.json")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime; SQLite keeps it as naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # PostgreSQL sessions are in UTC (``Database``)
            return value  # type: ignore[no-any-return]
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


JSONType = JSON().with_variant(JSONB(), "postgresql")


class IdType(Uuid[str]):
    """A UUID column holding ids as canonical strings, read without building UUID objects.

    SQLite keeps a UUID as 32 hex digits; SQLAlchemy's ``Uuid`` reads each one
    back through ``str(uuid.UUID(value))``, a few microseconds per id and a
    dozen ids per run in every round. This inserts the dashes directly (and
    falls back to ``uuid.UUID`` for anything that is not 32 characters).
    PostgreSQL adapts the column to its native ``uuid`` type as before.
    """

    cache_ok = True

    def __init__(self) -> None:
        super().__init__(as_uuid=False)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], str | None] | None:
        if dialect.supports_native_uuid and self.native_uuid:
            return super().result_processor(dialect, coltype)  # type: ignore[no-any-return,no-untyped-call]

        def process(value: Any) -> str | None:
            if value is None:
                return None
            if len(value) == 32:
                v = value.lower()
                return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"
            return str(UUID(value))

        return process


def loads(text: str | bytes) -> Any:
    """A JSON value read from the database: every JSON column is decoded here.

    ``Database`` makes it the engine's JSON deserializer (SQLite and
    PostgreSQL, where psycopg calls it with each value's bytes). It is
    ``json.loads``, made faster: Pydantic's parser reads small documents
    (an identity, an error) several times faster, which a page of 1,000 runs
    feels. It returns what ``json.loads`` does or refuses the text (a lone
    surrogate, a control character in a string, nesting past 200 levels);
    ``json.loads`` then reads it as before.
    """
    try:
        return pydantic_core.from_json(text)
    except ValueError:
        return json.loads(text)


def dumps(value: Any) -> str:
    """The JSON text stored for ``value``: every JSON value written goes through here.

    ``Database`` makes it the engine's JSON serializer (SQLite and
    PostgreSQL), and the batch statements (``conveyor.store.batch``) call it,
    so no writer can bypass it. Whatever JSON cannot hold, or a reader could
    not read back, is replaced as ``conveyor repair`` does
    (``jsonsafe.encode``): a lone surrogate by U+FFFD, NaN and Infinity by
    null, a sub-tree deeper than 64 levels by ``"<removed: too deep>"``. Each
    replacement is logged with its place, never the content. Values arrive
    here from the engine (an HTTP answer, an expression's result, an error's
    details): what requests send is refused at the door already.
    """
    encoded = jsonsafe.encode(value)
    if encoded.flaws:
        log.warning(
            "replaced %d flaw(s) in JSON written to the database: %s",
            len(encoded.flaws),
            jsonsafe.summary(encoded.flaws),
        )
    return encoded.text
