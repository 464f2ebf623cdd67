"""The contact reads other parts of Conveyor use: by id, by ids, and walking a tenant."""

from __future__ import annotations

from datetime import UTC, datetime

from conveyor.services.identity import resolve_identity
from conveyor.store import contacts as store
from conveyor.store.db import Database
from conveyor.testing.factories import make_tenant

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_reads_by_id_and_walks_in_id_order(db: Database) -> None:
    acme, other = make_tenant(db, "acme"), make_tenant(db, "other")
    with db.transaction() as conn:
        ids = [
            str(resolve_identity(conn, acme, {"type": "email", "value": f"u{i}@x.com"}, NOW)["id"])
            for i in range(5)
        ]
        theirs = str(
            resolve_identity(conn, other, {"type": "external_id", "value": "t"}, NOW)["id"]
        )

    with db.read() as conn:
        one = store.get_contact(conn, acme, ids[0].upper())  # any spelling of the id
        assert one is not None
        assert (str(one["id"]), one["email"], one["attributes"]) == (ids[0], "u0@x.com", {})
        assert store.get_contact(conn, acme, theirs) is None
        assert store.get_contact(conn, acme, "not-an-id") is None

        found = store.get_contacts(conn, acme, [ids[1], ids[3], theirs, "nope", ids[1]])
        assert set(found) == {ids[1], ids[3]}
        assert found[ids[3]]["push_targets"] == []
        assert store.get_contacts(conn, acme, []) == {}

        walked, after = [], None
        while page := store.iter_contacts(conn, acme, after=after, limit=2):
            walked += [str(c["id"]) for c in page]
            after = str(page[-1]["id"])
        assert walked == sorted(ids)
