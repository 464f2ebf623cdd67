"""Where ``conveyor automations`` finds automations: the HTTP API, or the database.

Both answer in the API's shapes, so a command prints the same either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy import Connection

from conveyor.cli.client import Api
from conveyor.cli.common import build_settings, fail, now, open_db
from conveyor.cli.follow import segment
from conveyor.cli.output import page_of
from conveyor.domain.egress import EgressPolicy
from conveyor.domain.errors import AutomationNotFound
from conveyor.services import automations as service
from conveyor.services.tenants import get_tenant_by_name

# The CLI cannot know the server's egress policy: the server checks URLs itself.
_ANY_ADDRESS = EgressPolicy.build("0.0.0.0/0,::/0", None)
_ALL = 100_000


class Backend(Protocol):
    """What the automation commands need, from the API or from the database."""

    def normalised(self, raws: Sequence[Any]) -> list[dict[str, Any]]:
        """Every document validated at once (all their problems in one error), as stored."""

    def current(self, name: str) -> dict[str, Any] | None:
        """The live automation of this name, with its definition; None if there is none."""

    def save(self, raw: Any, live: dict[str, Any] | None) -> dict[str, Any]:
        """Create the automation (``live`` None) or add a version to ``live``."""

    def get(self, ref: str, version: int | None) -> dict[str, Any]:
        """The automation, with its current definition or that of ``version``."""

    def list_all(self) -> dict[str, Any]:
        """Every automation, as one page."""

    def delete(self, ref: str) -> None:
        """Delete the automation."""


def at_version(automation: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """The automation as it was at the version ``old`` (a version of it)."""
    return {
        **automation,
        "version": old["version"],
        "version_id": old["id"],
        "description": old["definition"].get("description"),
        "tags": old["definition"].get("tags", []),
        "definition": old["definition"],
    }


class ApiBackend:
    """Over the HTTP API: the API key names the tenant."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def normalised(self, raws: Sequence[Any]) -> list[dict[str, Any]]:
        """Checked here, with the CLI's own rules (the same code as the server's)."""
        return [
            service.definition_json(d) for d in service.validate_definitions(raws, _ANY_ADDRESS)
        ]

    def current(self, name: str) -> dict[str, Any] | None:
        response = self.api.send("GET", f"/automations/{segment(name)}")
        if response.status_code == 404:
            return None
        self.api.check(response)
        found: dict[str, Any] = response.json()
        return found

    def save(self, raw: Any, live: dict[str, Any] | None) -> dict[str, Any]:
        if live is None:
            created: dict[str, Any] = self.api.call("POST", "/automations", json=raw)
            return created
        updated: dict[str, Any] = self.api.call(
            "PUT", f"/automations/{segment(live['id'])}", json=raw
        )
        return updated

    def get(self, ref: str, version: int | None) -> dict[str, Any]:
        automation: dict[str, Any] = self.api.call("GET", f"/automations/{segment(ref)}")
        if version is None:
            return automation
        path = f"/automations/{segment(automation['id'])}/versions"
        for page in self.api.pages(path, [("limit", "1000")], None, True):
            for old in page["items"]:
                if old["version"] == version:
                    return at_version(automation, old)
        raise fail(f"automation {ref} has no version {version}")

    def list_all(self) -> dict[str, Any]:
        items: list[Any] = []
        last: dict[str, Any] = {}
        for page in self.api.pages("/automations", [("limit", "1000")], None, True):
            items += page["items"]
            last = page
        return {**last, "items": items, "offset": 0, "next_cursor": None}

    def delete(self, ref: str) -> None:
        self.api.call("DELETE", f"/automations/{segment(ref)}")


class DbBackend:
    """On the database, in one tenant, in one transaction (``--tenant``)."""

    def __init__(self, conn: Connection, tenant_id: str, egress: EgressPolicy) -> None:
        self.conn = conn
        self.tenant_id = tenant_id
        self.egress = egress

    @classmethod
    @contextmanager
    def open(cls, tenant: str, database_url: str | None) -> Iterator[DbBackend]:
        """A backend for the block, whose changes commit together when it ends."""
        settings = build_settings(database_url=database_url)
        egress = settings.egress_policy()  # CONVEYOR_EGRESS_ALLOW / _DENY, as workers see them
        db = open_db(database_url, settings)
        try:
            with db.transaction() as conn:
                tenant_id = get_tenant_by_name(conn, tenant)["id"]
                yield cls(conn, tenant_id, egress)
        finally:
            db.dispose()

    def normalised(self, raws: Sequence[Any]) -> list[dict[str, Any]]:
        return [service.definition_json(d) for d in service.validate_definitions(raws, self.egress)]

    def current(self, name: str) -> dict[str, Any] | None:
        try:
            return service.get_automation(self.conn, self.tenant_id, name)
        except AutomationNotFound:
            return None

    def save(self, raw: Any, live: dict[str, Any] | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"now": now(), "created_by": "cli", "egress": self.egress}
        if live is None:
            return service.create_automation(self.conn, self.tenant_id, raw, **kw)
        return service.update_automation(self.conn, self.tenant_id, live["id"], raw, **kw)

    def get(self, ref: str, version: int | None) -> dict[str, Any]:
        automation = service.get_automation(self.conn, self.tenant_id, ref)
        if version is None:
            return automation
        return at_version(automation, service.get_version(self.conn, self.tenant_id, ref, version))

    def list_all(self) -> dict[str, Any]:
        page = service.list_automations(self.conn, self.tenant_id, limit=_ALL)
        return page_of(page.items, _ALL)

    def delete(self, ref: str) -> None:
        service.delete_automation(self.conn, self.tenant_id, ref, now=now())
