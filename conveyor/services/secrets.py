"""``conveyor secrets rotate``: every stored secret sealed under the current key.

The secrets: contacts' push targets that are URLs, and tenants' SMTP
passwords and webhook URLs (their channel settings).

After ``CONVEYOR_SECRET_KEY`` changes (the old one moved to
``CONVEYOR_SECRET_KEYS_OLD``), values sealed under an old key still open, but
the old key can only be retired once nothing needs it. Rotation walks every
place that holds secrets, a page at a time, opens each value sealed under
another key (or stored in clear by an older version) and seals it under the
current key. Each page is read, re-sealed outside any transaction, and
written in a short transaction that first checks the row did not change
meanwhile (a row that did is read again on the next pass). Running it twice
is harmless: the second run finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.channels import config as channel_config
from conveyor.channels import targets
from conveyor.crypto import SecretKeyMissing, SecretUnreadable, Vault
from conveyor.store import channel_settings as channel_store
from conveyor.store import contacts as contact_store
from conveyor.store.db import Database

PAGE = 500


@dataclass
class Rotation:
    """What a rotation did: values re-sealed, already current, and those it could not open."""

    resealed: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)  # "contact <id>: <why>"


@dataclass(frozen=True)
class _Place:
    """One kind of row holding secrets, as rotation walks it."""

    label: str  # names a row in ``Rotation.unreadable``: "contact <id>"
    page: Callable[[Connection, str | None], Sequence[RowMapping]]  # rows after a cursor
    cursor: Callable[[RowMapping], str]
    # The row's values re-sealed, or None when all are current (raises when one
    # does not open). Rows it skips (``holds`` false) hold no secret at all.
    reseal: Callable[[RowMapping], Any]
    # Writes them, in the transaction, unless the row changed since it was read.
    write: Callable[[Connection, RowMapping, Any], bool]
    holds: Callable[[RowMapping], bool] = lambda row: True


def rotate(db: Database, vault: Vault) -> Rotation:
    """Re-seal every stored secret under the vault's current key.

    Raises:
        SecretKeyMissing: the vault has no current key.
    """
    if not vault.can_seal:
        raise SecretKeyMissing("set CONVEYOR_SECRET_KEY to the key to rotate to")
    report = Rotation()
    for place in (_contacts(vault), _channel_settings(vault)):
        _rotate(db, place, report)
    return report


def _rotate(db: Database, place: _Place, report: Rotation) -> None:
    """Walk ``place`` by pages: read, re-seal outside a transaction, write what is unchanged."""
    after: str | None = None
    while True:
        with db.read() as conn:
            page = place.page(conn, after)
        if not page:
            return
        after = place.cursor(page[-1])
        changes = []
        for row in page:
            if not place.holds(row):
                continue
            try:
                new = place.reseal(row)
            except (SecretKeyMissing, SecretUnreadable) as exc:
                report.unreadable.append(f"{place.label} {place.cursor(row)}: {exc.detail}")
                continue
            if new is None:
                report.current += 1
            else:
                changes.append((row, new))
        if changes:
            with db.transaction() as conn:
                for row, new in changes:
                    # A row changed meanwhile was sealed anew by that write.
                    report.resealed += place.write(conn, row, new)


def _contacts(vault: Vault) -> _Place:
    """Contacts' push targets that are URLs."""

    def write(conn: Connection, row: RowMapping, new: Any) -> bool:
        tenant_id, contact_id = row["tenant_id"], str(row["id"])
        locked = contact_store.lock_contact(conn, tenant_id, contact_id)
        if locked is None or locked["push_targets"] != row["push_targets"]:
            return False
        contact_store.set_push_targets(conn, tenant_id, contact_id, new)
        return True

    return _Place(
        label="contact",
        page=lambda conn, after: contact_store.with_push_targets(conn, after_id=after, limit=PAGE),
        cursor=lambda row: str(row["id"]),
        reseal=lambda row: targets.reseal_all(vault, row["tenant_id"], row["push_targets"]),
        write=write,
    )


def _channel_settings(vault: Vault) -> _Place:
    """Tenants' SMTP passwords and webhook URLs."""

    def stored(row: RowMapping) -> dict[str, Any]:
        return {"email": row["email"] or {}, "push": row["push"] or {}}

    def write(conn: Connection, row: RowMapping, new: Any) -> bool:
        tenant_id = str(row["tenant_id"])
        locked = channel_store.lock_overrides(conn, tenant_id)
        if locked is None or (locked["email"], locked["push"]) != (row["email"], row["push"]):
            return False
        channel_store.set_values(conn, tenant_id, email=new["email"], push=new["push"])
        return True

    return _Place(
        label="channel settings of tenant",
        page=lambda conn, after: channel_store.page_all(conn, after_tenant=after, limit=PAGE),
        cursor=lambda row: str(row["tenant_id"]),
        reseal=lambda row: channel_config.reseal(vault, str(row["tenant_id"]), stored(row)),
        write=write,
        holds=lambda row: channel_config.has_secrets(stored(row)),
    )
