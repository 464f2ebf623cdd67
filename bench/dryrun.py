"""Dry runs at scale: simulated contact-days per second, with real ``conveyor worker`` processes.

A schedule-triggered automation (daily at 09:00, audience: every contact) of
four steps -- an email, a one-day wait for `mail.open`, a condition on the
wait's branch, a push -- is dry-run over D days x C contacts on PostgreSQL
and on SQLite, with one and with two workers. A third of the contacts opened a mail on some
day, so the wait finds stored history for some contact-days.

Prints contact-days/s (results written / seconds from the request to the
dry run's completion) and each worker's peak RSS. ``--results`` appends the
table to bench/RESULTS.md.

Usage: python bench/dryrun.py [--days 30] [--contacts 10000] [--workers 1 2]
                              [--databases postgresql sqlite]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from common import fresh_database, machine, start_workers, stop_workers
from sqlalchemy import insert

from conveyor.domain.ids import new_id
from conveyor.services.dry_runs import get_dry_run, request_dry_run
from conveyor.services.templates import put_template
from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts, events
from conveyor.testing.factories import make_automation, make_tenant

ROOT = Path(__file__).resolve().parent.parent
START = date(2026, 6, 1)
DEFINITION = {
    "name": "order-follow-up",
    "trigger": {"type": "schedule", "cron": "0 9 * * *", "timezone": "UTC", "audience": "true"},
    "steps": [
        {"key": "send_receipt", "type": "send_email_template", "template": "receipt"},
        {"key": "wait_for_open", "type": "wait_for_event", "event": "mail.open", "timeout": "P1D"},
        {
            "key": "opened",
            "type": "condition",
            "expression": "steps.wait_for_open.branch == 'received'",
        },
        {
            "key": "push",
            "type": "send_push_template",
            "template": "thanks",
            "depends_on": ["opened.true"],
        },
    ],
}


def load(db: Database, tenant: str, count: int, days: int) -> None:
    """Contacts (each with a push target) and `mail.open` events for a third of them."""
    now = datetime.now(UTC)
    rng = random.Random(7)
    rows, evs = [], []
    for i in range(count):
        cid = new_id()
        rows.append(
            {
                "id": cid,
                "tenant_id": tenant,
                "email": f"c{i}@example.com",
                "external_id": None,
                "push_targets": [f"device-{i}"],
                "attributes": {"plan": "pro" if i % 2 else "free"},
                "created_at": now,
                "updated_at": now,
            }
        )
        if i % 3 == 0:
            day = START + timedelta(days=rng.randrange(days))
            at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
            evs.append(
                {
                    "tenant_id": tenant,
                    "id": f"open-{i}",
                    "name": "mail.open",
                    "contact_id": cid,
                    "identity": {"type": "email", "value": f"c{i}@example.com"},
                    "payload": {},
                    "occurred_at": at,
                    "received_at": now,
                }
            )
    with db.transaction() as conn:
        for chunk in range(0, len(rows), 5000):
            conn.execute(insert(contacts), rows[chunk : chunk + 5000])
        for chunk in range(0, len(evs), 5000):
            conn.execute(insert(events), evs[chunk : chunk + 5000])
        put_template(
            conn,
            tenant,
            "receipt",
            "email",
            {
                "subject": "Your receipt",
                "text": "Hi {{ contact.email }}",
                "html": "<p>Hi {{ contact.email }}</p>",
            },
            now=now,
        )
        put_template(
            conn,
            tenant,
            "thanks",
            "push",
            {"title": "Thanks", "body": "Anything else, {{ contact.email }}?"},
            now=now,
        )


def scenario(kind: str, days: int, count: int, workers: int) -> str:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = fresh_database(kind, tmp)
        tenant = make_tenant(db, "bench")
        load(db, tenant, count, days)
        make_automation(db, tenant, DEFINITION)
        procs = start_workers(db, workers, tmp)
        started = time.perf_counter()
        with db.transaction() as conn:
            view = request_dry_run(
                conn,
                tenant,
                "order-follow-up",
                start_date=START,
                end_date=START + timedelta(days=days - 1),
                timezone=None,
                profile_ids=None,
                version=None,
                payload={},
                requested_by="bench",
                max_days=366,
                now=datetime.now(UTC),
            )
        while True:
            with db.read() as conn:
                state = get_dry_run(conn, tenant, view["id"])
            if state["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        rss = stop_workers(procs)
        db.dispose()
    results = sum(state["counts"].values())
    line = (
        f"| {kind}, {workers} worker{'s' if workers > 1 else ''} | {days} x {count:,} | "
        f"{state['status']} | {results:,} | {seconds:.1f} | {results / seconds:,.0f} | "
        f"{', '.join(f'{r:.0f}' for r in rss)} |"
    )
    print(line, flush=True)
    return line


HEADER = (
    "| scenario | days x contacts | status | results | seconds | contact-days/s | "
    "worker peak RSS MB |\n|---|---|---|---:|---:|---:|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--databases", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"]
    )
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    print(f"Dry runs -- {machine()}")
    print(HEADER)
    lines = [
        scenario(kind, args.days, args.contacts, n) for kind in args.databases for n in args.workers
    ]
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(
                f"\n### Dry runs, {stamp}\n\n{machine()}; a 4-step automation "
                "(email, one-day wait, condition, push), schedule-triggered daily for "
                f"every contact.\n\n{HEADER}\n" + "\n".join(lines) + "\n"
            )


if __name__ == "__main__":
    main()
