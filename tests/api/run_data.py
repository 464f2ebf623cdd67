"""A small, known set of runs for the run list tests, and helpers to shape runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from conveyor.store.db import Database
from conveyor.store.tables import run_tags, runs
from conveyor.testing.factories import make_automation, trigger

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTACT_1 = "01934a5e-0000-7000-8000-00000000c001"
CONTACT_2 = "01934a5e-0000-7000-8000-00000000c002"


def steps(n: int = 2) -> list[dict[str, Any]]:
    """``n`` linear ``set`` steps."""
    return [{"key": f"s{i}", "type": "set", "vars": {f"v{i}": i}} for i in range(n)]


def set_run(db: Database, run_id: str, **values: Any) -> None:
    """Write run columns directly.

    Statuses such as ``exhausted`` or ``timed-out``, and trigger sources other
    than the factory's, take a whole engine scenario to reach; the list tests
    only need rows that look like those runs, so they set the columns with SQL.
    """
    with db.transaction() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
        if "created_at" in values:  # a tag row carries its run's creation time
            conn.execute(
                update(run_tags)
                .where(run_tags.c.run_id == run_id)
                .values(created_at=values["created_at"])
            )


@dataclass
class Run:
    """What a test knows about one run of the data set."""

    id: str
    automation: str
    created_at: datetime
    tags: tuple[str, ...]
    status: str = "pending"
    trigger_type: str = "manual"
    trigger_source_type: str = "user"
    contact_id: str | None = None
    identity_value: str | None = None
    concurrency_key: str | None = None
    retry_of: str | None = None
    dry_run: bool = False


@dataclass
class Data:
    """Two automations of the tenant and ten runs, one a minute."""

    alpha: str
    beta: str
    runs: list[Run] = field(default_factory=list)

    def ids(self, pred: Any = lambda r: True, *, dry_run: bool = False) -> list[str]:
        """Ids of matching runs, newest first (only real runs, unless ``dry_run``)."""
        chosen = [r for r in self.runs if r.dry_run == dry_run and pred(r)]
        return [r.id for r in sorted(chosen, key=lambda r: (r.created_at, r.id), reverse=True)]


# automation, then the run's columns beyond the factory's defaults
_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("alpha", {}),
    ("alpha", {"status": "running"}),
    ("beta", {"status": "failed", "trigger_type": "event", "trigger_source_type": "event"}),
    ("alpha", {"status": "completed", "contact_id": CONTACT_1, "identity_value": "ada@x.org"}),
    ("beta", {"status": "exhausted", "concurrency_key": "k1"}),
    ("alpha", {"status": "timed-out", "retry_of": 2}),
    ("beta", {"status": "cancelled", "dry_run": True}),
    (
        "alpha",
        {"status": "waiting", "trigger_type": "schedule", "trigger_source_type": "schedule"},
    ),
    (
        "beta",
        {
            "status": "completed-with-errors",
            "contact_id": CONTACT_2,
            "identity_value": "bob@x.org",
            "concurrency_key": "k2",
        },
    ),
    ("alpha", {"status": "completed", "dry_run": True}),
]


def make_data(db: Database, tenant_id: str) -> Data:
    """The data set: alpha (tags blue, green) and beta (tag green), ten runs."""
    tags = {"alpha": ("blue", "green"), "beta": ("green",)}
    data = Data(
        alpha=make_automation(
            db, tenant_id, {"name": "alpha", "tags": ["blue", "green"], "steps": steps()}, now=BASE
        ),
        beta=make_automation(
            db, tenant_id, {"name": "beta", "tags": ["green"], "steps": steps()}, now=BASE
        ),
    )
    for i, (name, columns) in enumerate(_SPECS):
        created = BASE + timedelta(minutes=i)
        run = Run(trigger(db, tenant_id, name, now=created), name, created, tags[name])
        values = dict(columns)
        if "retry_of" in values:
            values["retry_of"] = data.runs[values["retry_of"]].id
        for key, value in values.items():
            setattr(run, key, value)
        if values:
            set_run(db, run.id, **values)
        data.runs.append(run)
    return data
