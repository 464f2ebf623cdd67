"""Contact use cases: upsert by email or external id, read, list, replace, patch, delete.

Services take a connection and never commit; the caller owns the transaction.
Values arrive checked by the wire schema; emails are normalised here again
(trimmed, lowercased) so every way in stores the same form. Push targets
arrive sealed (``prepare_targets``, called before the transaction) and are
shown masked (``conveyor.channels.targets``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.channels import targets
from conveyor.channels.push import target_hosts
from conveyor.crypto import Vault
from conveyor.domain.contacts import (
    ContactConflict,
    ContactNotFound,
    clean_push_targets,
    merge_patch,
    normalize_email,
    normalize_external_id,
)
from conveyor.domain.egress import EgressPolicy
from conveyor.domain.errors import EgressDenied
from conveyor.domain.times import iso
from conveyor.services.pagination import TOTAL_CAP, capped_page
from conveyor.store import contacts as store

# Counting every match of a huge list costs as much as reading it: stop here.
_FIELDS = ("email", "external_id", "push_targets", "attributes")


def contact_view(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """A contact as the API shows it."""
    return {
        "id": str(row["id"]),
        "external_id": row["external_id"],
        "email": row["email"],
        "push_targets": targets.shown_all(row["push_targets"]),
        "attributes": dict(row["attributes"] or {}),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The given fields in their stored form (only the keys present in ``fields``)."""
    values: dict[str, Any] = {}
    for name in _FIELDS:
        if name not in fields:
            continue
        value = fields[name]
        if name == "email" and value is not None:
            value = normalize_email(value)
        elif name == "external_id" and value is not None:
            value = normalize_external_id(value)
        elif name == "push_targets":
            if not isinstance(value, targets.Prepared):  # a URL must never be stored in clear
                raise TypeError("push targets must go through prepare_targets first")
        elif name == "attributes" and value is not None:
            value = dict(value)
        values[name] = value
    return values


def prepare_targets(vault: Vault, tenant_id: str, given: Sequence[str] | None) -> targets.Prepared:
    """Push targets as a client gave them, deduplicated, URLs sealed (before the transaction).

    Raises:
        SecretKeyMissing: a target is a URL and the server has no secret key.
    """
    return targets.prepare(vault, tenant_id, clean_push_targets(given or []))


def _stored_targets(values: dict[str, Any], current: RowMapping | None) -> dict[str, Any]:
    """``values`` with prepared push targets turned into what is stored."""
    prepared = values.get("push_targets")
    if isinstance(prepared, targets.Prepared):
        kept = current["push_targets"] if current is not None else None
        return {**values, "push_targets": prepared.stored(kept)}
    return values


def check_push_targets(egress: EgressPolicy, targets: Sequence[str] | None) -> None:
    """Refuse push targets that are URLs to a literal private address or a denied host.

    Device tokens are not places and pass. Host names are checked again, on
    what they resolve to, before every Apprise call.

    Raises:
        EgressDenied: with ``errors`` naming each refused target.
    """
    errors = []
    for i, target in enumerate(targets or ()):
        for host in target_hosts(target):
            why = egress.refusal(host)
            if why is not None:
                loc = ["body", "push_targets", i]
                errors.append({"loc": loc, "msg": why, "type": "egress_denied"})
                break
    if errors:
        raise EgressDenied(errors)


def get_contact(conn: Connection, tenant_id: str, contact_id: str) -> dict[str, Any]:
    """One contact; ``ContactNotFound`` if the tenant has none with this id."""
    row = store.get_contact(conn, tenant_id, contact_id)
    if row is None:
        raise ContactNotFound(f"contact {contact_id} not found")
    return contact_view(row)


def list_contacts(
    conn: Connection,
    tenant_id: str,
    *,
    email: str | None = None,
    external_id: str | None = None,
    attributes: Sequence[tuple[str, str]] = (),
    limit: int,
    offset: int = 0,
    after: store.Position | None = None,
) -> dict[str, Any]:
    """A page of contacts, newest first: ``{items, total, total_exact, has_more, last}``.

    ``total`` is exact up to ``TOTAL_CAP`` matches; past it ``total_exact`` is
    false and ``total`` is a lower bound. ``last`` is the keyset position of the
    page's last item when more follow.
    """
    if email is not None:
        email = email.strip().lower()
    rows, counted = store.list_contacts(
        conn,
        tenant_id,
        email=email,
        external_id=external_id,
        attributes=attributes,
        limit=limit + 1,
        offset=offset,
        after=after,
        count_cap=TOTAL_CAP,
    )
    return capped_page(
        rows, counted, limit=limit, offset=offset, view=contact_view, position_column="created_at"
    )


def _find_target(
    conn: Connection, tenant_id: str, email: str | None, external_id: str | None
) -> RowMapping | None:
    """The contact an upsert is about; ``ContactConflict`` if its keys name two contacts.

    The external id is the client system's own key, so it wins: a contact found
    by it takes a new email, but an email whose contact already has another
    external id is a different person, and that is a conflict.
    """
    by_external = (
        store.find_by_external_ids(conn, tenant_id, [external_id]).get(external_id)
        if external_id is not None
        else None
    )
    by_email = (
        store.find_by_emails(conn, tenant_id, [email]).get(email) if email is not None else None
    )
    if by_external is not None:
        if by_email is not None and by_email["id"] != by_external["id"]:
            raise ContactConflict(
                f"the email {email!r} belongs to contact {by_email['id']}, "
                f"the external id {external_id!r} to contact {by_external['id']}"
            )
        return by_external
    if by_email is not None and external_id is not None and by_email["external_id"] is not None:
        raise ContactConflict(
            f"contact {by_email['id']} with the email {email!r} has the external id "
            f"{by_email['external_id']!r}, not {external_id!r}"
        )
    return by_email


def upsert_contact(
    conn: Connection, tenant_id: str, fields: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], bool]:
    """Create or update the contact with this email and/or external id.

    ``fields`` holds ``email`` and/or ``external_id`` (one at least), and
    optionally ``push_targets`` (replaced) and ``attributes`` (merged key by
    key; a null value removes the key). Returns the contact and whether it was
    created.

    Raises:
        ContactConflict: the email and the external id belong to different
            contacts.
    """
    values = _clean(fields)
    email, external_id = values.get("email"), values.get("external_id")
    if email is None and external_id is None:
        raise ValueError("an upsert needs an email or an external id")
    # Two attempts: a concurrent upsert may create the contact between our look
    # up and our insert; the second look up then finds it.
    for attempt in (1, 2):
        target = _find_target(conn, tenant_id, email, external_id)
        if target is not None:
            return _update_found(conn, tenant_id, target, values, now), False
        created_values = _stored_targets(values, None)
        if "attributes" in created_values:
            created_values["attributes"] = merge_patch({}, created_values["attributes"]) or {}
        try:
            return contact_view(store.create_contact(conn, tenant_id, created_values, now)), True
        except ContactConflict:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _merged(contact: RowMapping, patch: Mapping[str, Any] | None) -> dict[str, Any]:
    """The contact's attributes with ``patch`` merged in (``None`` clears them all)."""
    merged = merge_patch(contact["attributes"] or {}, patch)
    return dict(merged) if isinstance(merged, Mapping) else {}


def _update_found(
    conn: Connection,
    tenant_id: str,
    target: RowMapping,
    values: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    locked = store.lock_contact(conn, tenant_id, str(target["id"]))
    if locked is None:  # deleted meanwhile
        raise ContactNotFound(f"contact {target['id']} not found")
    changes = _stored_targets(dict(values), locked)
    if "attributes" in changes:
        changes["attributes"] = _merged(locked, changes["attributes"])
    row = store.update_contact(conn, tenant_id, str(locked["id"]), changes, now)
    assert row is not None
    return contact_view(row)


def replace_contact(
    conn: Connection, tenant_id: str, contact_id: str, fields: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """Replace every field of a contact (absent ones become null, ``[]`` or ``{}``)."""
    current = store.lock_contact(conn, tenant_id, contact_id)
    if current is None:
        raise ContactNotFound(f"contact {contact_id} not found")
    values = _clean(
        {
            "email": fields.get("email"),
            "external_id": fields.get("external_id"),
            "push_targets": fields.get("push_targets") or targets.Prepared(()),
            "attributes": fields.get("attributes") or {},
        }
    )
    row = store.update_contact(conn, tenant_id, contact_id, _stored_targets(values, current), now)
    if row is None:
        raise ContactNotFound(f"contact {contact_id} not found")
    return contact_view(row)


def patch_contact(
    conn: Connection, tenant_id: str, contact_id: str, patch: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """Apply a JSON merge patch (RFC 7396): given fields change, ``attributes`` merge."""
    current = store.lock_contact(conn, tenant_id, contact_id)
    if current is None:
        raise ContactNotFound(f"contact {contact_id} not found")
    values = _stored_targets(_clean(patch), current)
    if "attributes" in values:
        values["attributes"] = _merged(current, values["attributes"])
    if not values:
        return contact_view(current)
    row = store.update_contact(conn, tenant_id, contact_id, values, now)
    assert row is not None
    return contact_view(row)


def delete_contact(conn: Connection, tenant_id: str, contact_id: str) -> None:
    """Delete a contact. Its events and messages stay, without the link; runs keep its id."""
    if not store.delete_contact(conn, tenant_id, contact_id):
        raise ContactNotFound(f"contact {contact_id} not found")
