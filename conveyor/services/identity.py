"""Identity resolution: from ``{type, value}`` to a contact.

``email`` and ``external_id`` find the tenant's contact, or create a bare one
on first sight; ``contact_id`` must name an existing contact. A batch of
identities is resolved with a fixed number of statements (look up each kind
at once, insert the missing ones, read those back), whatever its size.

Creation is race-safe: missing contacts are inserted with ``ON CONFLICT DO
NOTHING`` and read back, so when two transactions see the same new email at
once, one inserts it and the other (on PostgreSQL, after waiting for the
first to commit) reads that row: the contact exists once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.contacts import IdentityRef, UnknownContact, parse_identity
from conveyor.domain.errors import ConveyorError
from conveyor.store import contacts as store


@dataclass(frozen=True)
class Resolved:
    """An identity, normalised, and the id of the contact it names."""

    identity: IdentityRef
    contact_id: str


def resolve_identity(
    conn: Connection, tenant_id: str, identity: Mapping[str, Any] | IdentityRef, now: datetime
) -> RowMapping:
    """The contact ``identity`` names, created on first sight of an email or external id.

    Raises:
        InvalidIdentity: the identity is malformed (not an email, not an id...).
        UnknownContact: a ``contact_id`` that does not exist in the tenant.
    """
    (result,) = resolve_identities(conn, tenant_id, [identity], now)
    if isinstance(result, ConveyorError):
        raise result
    assert result is not None  # created if new
    contact = store.get_contact(conn, tenant_id, result.contact_id)
    if contact is None:  # deleted by a concurrent transaction since
        raise UnknownContact(f"contact {result.contact_id} not found")
    return contact


def resolve_identities(
    conn: Connection,
    tenant_id: str,
    identities: Sequence[Mapping[str, Any] | IdentityRef],
    now: datetime,
    *,
    create: bool = True,
) -> list[Resolved | ConveyorError | None]:
    """Resolve many identities at once; each gets its contact's id or the error that refused it.

    Costs at most six statements, whatever the number of identities. With
    ``create=False`` nothing is written (a read transaction will do): an email
    or external id seen for the first time gets None.
    """
    parsed: list[IdentityRef | ConveyorError] = []
    for identity in identities:
        try:
            parsed.append(
                identity if isinstance(identity, IdentityRef) else parse_identity(identity)
            )
        except ConveyorError as exc:
            parsed.append(exc)
    refs = [p for p in parsed if isinstance(p, IdentityRef)]
    emails = {r.value for r in refs if r.type == "email"}
    external_ids = {r.value for r in refs if r.type == "external_id"}
    by_email = store.find_by_emails(conn, tenant_id, emails)
    by_external = store.find_by_external_ids(conn, tenant_id, external_ids)
    by_id = store.get_contacts(conn, tenant_id, {r.value for r in refs if r.type == "contact_id"})
    new_emails, new_external = emails - set(by_email), external_ids - set(by_external)
    if create and (new_emails or new_external):
        store.insert_missing(conn, tenant_id, emails=new_emails, external_ids=new_external, now=now)
        # Read back rather than trust RETURNING: a row another transaction
        # inserted first is not returned by ON CONFLICT DO NOTHING.
        by_email.update(store.find_by_emails(conn, tenant_id, new_emails))
        by_external.update(store.find_by_external_ids(conn, tenant_id, new_external))
    tables = {"email": by_email, "external_id": by_external, "contact_id": by_id}
    results: list[Resolved | ConveyorError | None] = []
    for p in parsed:
        if isinstance(p, ConveyorError):
            results.append(p)
            continue
        contact = tables[p.type].get(p.value)
        if contact is None and not create and p.type != "contact_id":
            results.append(None)  # first sight: created by a write transaction
        elif contact is None:
            # Only a contact id can be missing here: emails and external ids were created.
            results.append(UnknownContact(f"contact {p.value} not found"))
        else:
            results.append(Resolved(p, str(contact["id"])))
    return results
