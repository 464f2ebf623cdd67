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

from dataclasses import dataclass, field

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


def rotate(db: Database, vault: Vault) -> Rotation:
    """Re-seal every stored secret under the vault's current key.

    Raises:
        SecretKeyMissing: the vault has no current key.
    """
    if not vault.can_seal:
        raise SecretKeyMissing("set CONVEYOR_SECRET_KEY to the key to rotate to")
    report = Rotation()
    _rotate_contacts(db, vault, report)
    _rotate_channel_settings(db, vault, report)
    return report


def _rotate_contacts(db: Database, vault: Vault, report: Rotation) -> None:
    after: str | None = None
    while True:
        with db.read() as conn:
            page = contact_store.with_push_targets(conn, after_id=after, limit=PAGE)
        if not page:
            return
        after = str(page[-1]["id"])
        changes = []
        for row in page:
            try:
                new = targets.reseal_all(vault, row["tenant_id"], row["push_targets"])
            except (SecretKeyMissing, SecretUnreadable) as exc:
                report.unreadable.append(f"contact {row['id']}: {exc.detail}")
                continue
            if new is None:
                report.current += 1
            else:
                changes.append((row, new))
        if changes:
            with db.transaction() as conn:
                for row, new in changes:
                    locked = contact_store.lock_contact(conn, row["tenant_id"], str(row["id"]))
                    if locked is None or locked["push_targets"] != row["push_targets"]:
                        continue  # changed meanwhile: that write sealed it anew
                    contact_store.set_push_targets(conn, row["tenant_id"], str(row["id"]), new)
                    report.resealed += 1


def _rotate_channel_settings(db: Database, vault: Vault, report: Rotation) -> None:
    """Tenants' SMTP passwords and webhook URLs, one page of tenants at a time."""
    after: str | None = None
    while True:
        with db.read() as conn:
            page = channel_store.page_all(conn, after_tenant=after, limit=PAGE)
        if not page:
            return
        after = str(page[-1]["tenant_id"])
        changes = []
        for row in page:
            stored = {"email": row["email"] or {}, "push": row["push"] or {}}
            if not channel_config.has_secrets(stored):
                continue
            try:
                new = channel_config.reseal(vault, str(row["tenant_id"]), stored)
            except (SecretKeyMissing, SecretUnreadable) as exc:
                report.unreadable.append(
                    f"channel settings of tenant {row['tenant_id']}: {exc.detail}"
                )
                continue
            if new is None:
                report.current += 1
            else:
                changes.append((row, new))
        if changes:
            with db.transaction() as conn:
                for row, new in changes:
                    tenant_id = str(row["tenant_id"])
                    locked = channel_store.lock_overrides(conn, tenant_id)
                    if locked is None or (locked["email"], locked["push"]) != (
                        row["email"],
                        row["push"],
                    ):
                        continue  # changed meanwhile: that write sealed it anew
                    channel_store.set_values(conn, tenant_id, email=new["email"], push=new["push"])
                    report.resealed += 1
