"""The payload filter's SQL: ``payload.<path>=<value>`` on the runs' trigger events.

What matches is decided in ``conveyor.domain.run_filters.PayloadMatch``: the
value as a JSON string, and the JSON number, ``true``, ``false`` or ``null``
it spells, if any. Each database asks it its own way, with the same answers:

* PostgreSQL: ``trigger_event @> '{"payload": {"order": {"id": 123}}}'::jsonb``, one
  containment per candidate value, OR-ed: each is a scan of the GIN
  ``jsonb_path_ops`` index ``ix_runs_payload``. Containment is exact about
  structure (an array holding the value does not match) and compares numbers
  by value.
* SQLite: ``json_type`` and ``json_extract`` at the path, with no index: the
  run lists require a time window there (``conveyor.services.run_lists``), so
  the scan is bounded by ``ix_runs_tenant_created``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Boolean, ColumnElement, String, and_, bindparam, cast, func, or_
from sqlalchemy.dialects.postgresql import JSONB

from conveyor.domain.run_filters import PayloadMatch
from conveyor.store.tables import runs

_INT64 = 2**63


def _nest(keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc: Any = value
    for key in reversed(keys):
        doc = {key: doc}
    return {"payload": doc}


def _sqlite_number(value: float | int) -> float | int:
    # SQLite binds integers of 64 bits; a larger one is compared as a float, as
    # SQLite reads such a number from JSON.
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        return float(value)
    return value


def payload_condition(dialect: str, match: PayloadMatch) -> ColumnElement[bool]:
    """The WHERE clause for ``match`` on ``runs``, in ``dialect``'s terms."""
    column = runs.c.trigger_event
    candidates = match.candidates()
    if dialect == "postgresql":
        contains = column.op("@>", return_type=Boolean)
        # Each document is written into the SQL as a constant, not sent as a
        # parameter: a prepared statement's generic plan cannot tell how rare a
        # parameter's value is, and guessing it common, walks the whole list
        # index for a value one run holds.
        docs = [
            cast(
                bindparam(None, json.dumps(_nest(match.keys, v)), String, literal_execute=True),
                JSONB,
            )
            for v in candidates
        ]
        return or_(*(contains(doc) for doc in docs))
    # Keys are letters, digits, `_` and `-` only (PayloadMatch), so quoting them is safe.
    path = "$.payload" + "".join(f'."{key}"' for key in match.keys)
    kind = func.json_type(column, path)
    value = func.json_extract(column, path)
    conds: list[ColumnElement[bool]] = []
    for v in candidates:
        if isinstance(v, str):
            conds.append(and_(kind == "text", value == v))
        elif v is None or isinstance(v, bool):
            conds.append(kind == {None: "null", True: "true", False: "false"}[v])
        else:
            conds.append(and_(kind.in_(("integer", "real")), value == _sqlite_number(v)))
    return or_(*conds)
