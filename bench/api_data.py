"""Synthetic runs for the Runs API benchmark (bench/api.py), loaded fast.

Runs are generated in creation order over 30 days, spread over a few tenants
(one holds most of them) and ~20 automations, in every status, with 3 step rows
each. PostgreSQL is loaded with COPY, SQLite with executemany in big
transactions; both with their secondary indexes dropped during the load and
rebuilt after it (as a restore would), then ANALYZEd.

Attempts and history lines are not generated: the detail and steps views
read them by run id through their own unique indexes, whose depth hardly
depends on table size.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from conveyor.domain.status import RunStatus
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, make_tenant

DAYS = 30
STEPS = 3
# (name, share of the runs, automations)
TENANTS = [("big", 0.70, 14), ("t2", 0.10, 2), ("t3", 0.10, 2), ("t4", 0.10, 2)]
STATUS_WEIGHTS = {
    RunStatus.COMPLETED: 80,
    RunStatus.COMPLETED_WITH_ERRORS: 3,
    RunStatus.FAILED: 5,
    RunStatus.EXHAUSTED: 2,
    RunStatus.TIMED_OUT: 2,
    RunStatus.CANCELLED: 2,
    RunStatus.PENDING: 2,
    RunStatus.RUNNING: 2,
    RunStatus.WAITING: 2,
}
LIVE = {RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING}
TRIGGERS = [  # (trigger_type, source type, weight)
    ("event", "event", 60),
    ("manual", "api_key", 20),
    ("schedule", "schedule", 15),
    ("automation_failure", "automation", 3),
    ("retry", "retry", 2),
]
TAGS = ["billing", "nightly", None, None]  # every automation gets tags[i % 4]
RUN_COLUMNS = [
    "id", "tenant_id", "automation_id", "automation_name", "version_id", "version_number",
    "status", "trigger_type", "trigger_source_type", "trigger_source_id", "trigger_event",
    "identity", "identity_value", "contact_id", "concurrency_key", "idempotency_key",
    "retry_of", "dry_run", "error", "event_seq", "created_at", "started_at", "completed_at",
    "updated_at", "timeout_at",
]  # fmt: skip
STEP_COLUMNS = [
    "id", "tenant_id", "run_id", "step_key", "step_type", "position", "status", "output",
    "output_size", "error", "attempts", "started_at", "completed_at",
]  # fmt: skip
TAG_COLUMNS = ["run_id", "tag", "tenant_id", "created_at"]
JSON_RUN = {"trigger_event", "identity", "error"}
JSON_STEP = {"output", "error"}


def definition(name: str, tag: str | None) -> dict[str, Any]:
    """A 3-step automation of `set` steps (the stored runs' steps match it)."""
    return {
        "name": name,
        "tags": [tag] if tag else [],
        "steps": [{"key": f"s{i}", "type": "set", "vars": {f"v{i}": i}} for i in range(STEPS)],
    }


@dataclass
class Automation:
    id: str
    name: str
    version_id: str
    tag: str | None


@dataclass
class Tenant:
    id: str
    name: str
    share: float
    automations: list[Automation] = field(default_factory=list)


def make_tenants(db: Database) -> list[Tenant]:
    """The benchmark's tenants and automations, made through the normal code path."""
    from conveyor.store.automations import get_automation

    tenants = []
    n = 0
    for name, share, count in TENANTS:
        tenant = Tenant(make_tenant(db, name), name, share)
        for _ in range(count):
            tag = TAGS[n % len(TAGS)]
            auto_name = f"automation-{n:02d}"
            auto_id = make_automation(db, tenant.id, definition(auto_name, tag))
            with db.read() as conn:
                row = get_automation(conn, tenant.id, auto_id)
            assert row is not None
            tenant.automations.append(
                Automation(auto_id, auto_name, str(row["current_version_id"]), tag)
            )
            n += 1
        tenants.append(tenant)
    return tenants


def existing_tenants(db: Database) -> list[Tenant]:
    """The tenants and automations ``make_tenants`` made earlier in this database."""
    from sqlalchemy import select

    from conveyor.store.tables import automations, tenants

    found = []
    with db.read() as conn:
        for name, share, _ in TENANTS:
            tenant_id = conn.execute(select(tenants.c.id).where(tenants.c.name == name)).scalar()
            tenant = Tenant(str(tenant_id), name, share)
            rows = conn.execute(
                select(automations).where(automations.c.tenant_id == tenant_id)
                .order_by(automations.c.name)
            ).mappings()  # fmt: skip
            for row in rows:
                n = int(row["name"].rsplit("-", 1)[1])
                tenant.automations.append(
                    Automation(
                        str(row["id"]),
                        row["name"],
                        str(row["current_version_id"]),
                        TAGS[n % len(TAGS)],
                    )
                )
            found.append(tenant)
    return found


def uuid7_at(ms: int, rng: random.Random) -> str:
    """A UUIDv7 string for a time in milliseconds (so ids sort like creation times)."""
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    value |= 0b10 << 62 | rng.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Generated:
    """One run's rows."""

    run: dict[str, Any]
    steps: list[dict[str, Any]]
    tags: list[dict[str, Any]]


def _step_statuses(status: RunStatus) -> list[str]:
    if status in (RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_ERRORS):
        return ["completed"] * STEPS
    if status in (RunStatus.FAILED, RunStatus.EXHAUSTED, RunStatus.TIMED_OUT):
        return ["completed", "failed", "skipped"]
    if status == RunStatus.CANCELLED:
        return ["completed", "cancelled", "cancelled"]
    if status == RunStatus.PENDING:
        return ["pending"] * STEPS
    if status == RunStatus.WAITING:
        return ["completed", "waiting", "pending"]
    return ["completed", "running", "pending"]


def generate(tenants: list[Tenant], count: int, seed: int = 7) -> Iterator[Generated]:
    """``count`` runs in creation order over the last 30 days."""
    rng = random.Random(seed)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=DAYS)
    span = (end - start).total_seconds()
    statuses, status_w = list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values())
    terminal = [s for s in statuses if s not in LIVE]
    terminal_w = [STATUS_WEIGHTS[s] for s in terminal]
    triggers, trigger_w = [t[:2] for t in TRIGGERS], [t[2] for t in TRIGGERS]
    shares = [t.share for t in tenants]
    contact_ids = [uuid7_at(n, rng) for n in range(50_000)]
    recent: dict[str, str] = {}
    for i in range(count):
        created = start + timedelta(seconds=(i + rng.random()) * span / count)
        created = created.replace(microsecond=created.microsecond or 1)
        ms = int(created.timestamp() * 1000)
        tenant = rng.choices(tenants, shares)[0]
        auto = rng.choice(tenant.automations)
        # Only recent runs are still live; old ones have all finished.
        live_ok = end - created < timedelta(days=1)
        status = (
            rng.choices(statuses, status_w)[0] if live_ok else rng.choices(terminal, terminal_w)[0]
        )
        ttype, stype = rng.choices(triggers, trigger_w)[0]
        run_id = uuid7_at(ms, rng)
        contact = rng.randrange(50_000)
        started = created + timedelta(milliseconds=rng.randrange(5, 500))
        done = status not in LIVE
        completed = started + timedelta(milliseconds=rng.randrange(10, 5000)) if done else None
        run = {
            "id": run_id,
            "tenant_id": tenant.id,
            "automation_id": auto.id,
            "automation_name": auto.name,
            "version_id": auto.version_id,
            "version_number": 1,
            "status": str(status),
            "trigger_type": ttype,
            "trigger_source_type": stype,
            "trigger_source_id": None,
            "trigger_event": {
                "id": f"evt-{i}",
                "name": "order.completed",
                "payload": {"order_id": i, "total": rng.randrange(1, 500)},
                "occurred_at": created.isoformat().replace("+00:00", "Z"),
            },
            "identity": {"type": "email", "value": f"user{contact}@example.com"},
            "identity_value": f"user{contact}@example.com",
            "contact_id": contact_ids[contact] if contact % 2 else None,
            "concurrency_key": f"user{contact}" if i % 3 == 0 else None,
            "idempotency_key": None,
            "retry_of": recent.get(tenant.id) if ttype == "retry" else None,
            "dry_run": rng.random() < 0.01,
            "error": {"code": "step_failed", "message": "step s1 failed"}
            if status in (RunStatus.FAILED, RunStatus.EXHAUSTED, RunStatus.TIMED_OUT)
            else None,
            "event_seq": 0,
            "created_at": created,
            "started_at": None if status == RunStatus.PENDING else started,
            "completed_at": completed,
            "updated_at": completed or started,
            "timeout_at": None,
        }
        recent[tenant.id] = run_id
        steps = []
        for pos, step_status in enumerate(_step_statuses(status)):
            ran = step_status in ("completed", "failed")
            output = {f"v{pos}": pos} if step_status == "completed" else None
            steps.append(
                {
                    "id": uuid7_at(ms, rng),
                    "tenant_id": tenant.id,
                    "run_id": run_id,
                    "step_key": f"s{pos}",
                    "step_type": "set",
                    "position": pos,
                    "status": step_status,
                    "output": output,
                    "output_size": 9 if output else None,
                    "error": {"code": "boom", "message": "failed"}
                    if step_status == "failed"
                    else None,
                    "attempts": 1 if ran else 0,
                    "started_at": started if ran else None,
                    "completed_at": completed if ran and completed else None,
                }
            )
        tags = (  # as the product: a dry run's simulated runs have no tags
            [{"run_id": run_id, "tag": auto.tag, "tenant_id": tenant.id, "created_at": created}]
            if auto.tag and not run["dry_run"]
            else []
        )
        yield Generated(run, steps, tags)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _pg_row(row: dict[str, Any], columns: list[str], js: set[str]) -> tuple[Any, ...]:
    return tuple(_json(row[c]) if c in js else row[c] for c in columns)


def load_postgresql(db: Database, tenants: list[Tenant], count: int) -> float:
    """COPY ``count`` runs in, indexes rebuilt after; return the seconds it took."""
    url = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    with (
        psycopg.connect(url, autocommit=True) as conn,
        psycopg.connect(url) as steps_conn,
        psycopg.connect(url) as tags_conn,
    ):
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
            "('runs', 'step_runs', 'run_tags') AND indexname LIKE 'ix\\_%'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        # Three COPYs at once (one per connection), so nothing is held in memory.
        # Foreign keys are checked by triggers; a restore of known-good rows skips them.
        for c in (steps_conn, tags_conn):
            c.execute("SET session_replication_role = replica")
        conn.execute("SET session_replication_role = replica")
        with (
            conn.transaction(),
            conn.cursor().copy(f"COPY runs ({', '.join(RUN_COLUMNS)}) FROM STDIN") as runs_copy,
            steps_conn.cursor().copy(
                f"COPY step_runs ({', '.join(STEP_COLUMNS)}) FROM STDIN"
            ) as steps_copy,
            tags_conn.cursor().copy(
                f"COPY run_tags ({', '.join(TAG_COLUMNS)}) FROM STDIN"
            ) as tags_copy,
        ):
            for g in generate(tenants, count):
                runs_copy.write_row(_pg_row(g.run, RUN_COLUMNS, JSON_RUN))
                for s in g.steps:
                    steps_copy.write_row(_pg_row(s, STEP_COLUMNS, JSON_STEP))
                for t in g.tags:
                    tags_copy.write_row(_pg_row(t, TAG_COLUMNS, set()))
        steps_conn.commit()
        tags_conn.commit()
        conn.execute("SET session_replication_role = origin")
        conn.execute("SET maintenance_work_mem = '512MB'")
        for _, ddl in indexes:
            conn.execute(ddl)
        for table in ("runs", "step_runs", "run_tags"):
            conn.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, bool):
        return int(value)
    return value


def _sqlite_row(
    row: dict[str, Any], columns: list[str], js: set[str], ids: set[str]
) -> tuple[Any, ...]:
    out = []
    for c in columns:
        v = row[c]
        if c in js:
            # A JSON column holds the text `null` for None, as SQLAlchemy writes it.
            out.append(json.dumps(v, separators=(",", ":")))
        elif c in ids and v is not None:
            out.append(v.replace("-", ""))  # SQLAlchemy's Uuid on SQLite: 32 hex digits
        else:
            out.append(_sqlite_value(v))
    return tuple(out)


_RUN_IDS = {"id", "tenant_id", "automation_id", "version_id", "contact_id", "retry_of"}
_STEP_IDS = {"id", "tenant_id", "run_id"}
_TAG_IDS = {"run_id", "tenant_id"}


def load_sqlite(path: str, tenants: list[Tenant], count: int, batch: int = 50_000) -> float:
    """Insert ``count`` runs with executemany, indexes rebuilt after; return seconds taken."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix\\_%' "
        "ESCAPE '\\' AND tbl_name IN ('runs', 'step_runs', 'run_tags')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')

    def insert(table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    runs_rows: list[tuple[Any, ...]] = []
    step_rows: list[tuple[Any, ...]] = []
    tag_rows: list[tuple[Any, ...]] = []

    def flush() -> None:
        conn.execute("BEGIN")
        insert("runs", RUN_COLUMNS, runs_rows)
        insert("step_runs", STEP_COLUMNS, step_rows)
        insert("run_tags", TAG_COLUMNS, tag_rows)
        conn.execute("COMMIT")
        runs_rows.clear()
        step_rows.clear()
        tag_rows.clear()

    for g in generate(tenants, count):
        runs_rows.append(_sqlite_row(g.run, RUN_COLUMNS, JSON_RUN, _RUN_IDS))
        step_rows.extend(_sqlite_row(s, STEP_COLUMNS, JSON_STEP, _STEP_IDS) for s in g.steps)
        tag_rows.extend(_sqlite_row(t, TAG_COLUMNS, set(), _TAG_IDS) for t in g.tags)
        if len(runs_rows) >= batch:
            flush()
    flush()
    for _, ddl in indexes:
        conn.execute(ddl)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started
