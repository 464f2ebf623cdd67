"""The trigger's fast path answers every request as FastAPI's path would.

``routers/automations.py`` marks the trigger ``fast_path``: its common case is
answered without FastAPI solving the route's dependencies, and whatever the
fast path declines goes through FastAPI. Here the same requests go to two apps
on the same database, one as shipped and one with the fast path switched off,
each in a tenant of its own with the same automation, and the answers must be
alike (ids and times aside). The fast path's own answers are counted, so the
test also shows which requests it took.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from conveyor.api.routers.automations import router, trigger_automation
from conveyor.api.routing import HygienicRoute
from conveyor.domain.scopes import ALL_SCOPES, Scope
from conveyor.store.db import Database
from conveyor.store.tables import runs
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import DEFINITION, TestClient, make_client

PATH = "/api/v1/automations/{ref}/trigger"


def _trigger_route() -> HygienicRoute:
    """The trigger's route: a module object, which every app in the process shares."""
    (route,) = [r for r in router.routes if getattr(r, "name", None) == "trigger_automation"]
    assert isinstance(route, HygienicRoute)
    return route


class Side:
    """One app: its client, keys of its own tenant, and how often its fast path took a request.

    The routers, and so the trigger's route, are module objects that every app
    in the process shares: each side sets the route's fast path before each
    of its requests (the fixture puts the original back).
    """

    def __init__(
        self,
        client: TestClient,
        route: HygienicRoute,
        tenant_id: str,
        token: str,
        read_only: str,
        *,
        fast: bool,
    ) -> None:
        self.client = client
        self.route = route
        self.tenant_id = tenant_id
        self.token = token
        self.read_only = read_only
        self.taken = 0  # requests the fast path answered (or refused), not declined
        self.automation_id = ""  # its tenant's automation, once the fixture made it
        original = route._fast
        assert original is not None, "the trigger route has no fast path"

        async def counting(request: Request, body: Any) -> Response | None:
            try:
                answer = await original(request, body)
            except Exception:
                self.taken += 1
                raise
            self.taken += answer is not None
            return answer

        self.fast = counting if fast else None

    def post(self, ref: str, *, auth: str = "bearer", **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if auth == "bearer":
            headers["Authorization"] = f"Bearer {self.token}"
        elif auth == "x-api-key":
            headers["X-API-Key"] = self.token
        elif auth == "read-only":
            headers["Authorization"] = f"Bearer {self.read_only}"
        elif auth == "basic":
            headers["Authorization"] = "Basic dXNlcjpwYXNz"
        self.route._fast = self.fast
        return self.client.post(PATH.format(ref=ref), headers=headers, **kw)


@pytest.fixture
def sides(db: Database, new_tenant: NewTenant, new_key: NewKey) -> Iterator[tuple[Side, Side]]:
    route = _trigger_route()
    original = route._fast
    made = []
    for name, fast in (("fast", True), ("slow", False)):
        tenant = new_tenant(name)
        token = new_key(tenant["id"])
        read_only = new_key(
            tenant["id"], scopes=[s for s in ALL_SCOPES if s != Scope.AUTOMATIONS_TRIGGER]
        )
        side = Side(make_client(db), route, tenant["id"], token, read_only, fast=fast)
        created = side.client.post(
            "/api/v1/automations", json=DEFINITION, headers={"Authorization": f"Bearer {token}"}
        )
        assert created.status_code == 201, created.text
        side.automation_id = created.json()["id"]
        made.append(side)
    try:
        yield made[0], made[1]
    finally:
        route._fast = original
        for side in made:
            side.client.close()


def _normal(value: Any) -> Any:
    """``value`` with ids and times (which differ between the two tenants) blanked."""
    if isinstance(value, dict):
        return {
            k: "<varies>"
            if v is not None and (k == "id" or k.endswith("_id") or k.endswith("_at"))
            else _normal(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _answer(response: Any) -> tuple[int, str, str | None, Any]:
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("idempotent-replayed"),
        _normal(response.json()),
    )


LONG = "k" * 256
# (what the request is, how to send it, whether the fast path answers it)
CASES: list[tuple[str, Callable[[Side], Any], bool]] = [
    ("a payload", lambda s: s.post(DEFINITION["name"], json={"payload": {"n": 1}}), True),
    (
        "identity and a body key",
        lambda s: s.post(
            DEFINITION["name"],
            json={"identity": {"type": "external_id", "value": "u"}, "idempotency_key": "b"},
        ),
        True,
    ),
    (
        "the body key again",
        lambda s: s.post(DEFINITION["name"], json={"idempotency_key": "b"}),
        True,
    ),
    (
        "a header key",
        lambda s: s.post(DEFINITION["name"], json={}, headers={"Idempotency-Key": "h"}),
        True,
    ),
    (
        "the header key again",
        lambda s: s.post(DEFINITION["name"], json={}, headers={"Idempotency-Key": "h"}),
        False,  # replayed by the Idempotency-Key middleware: the route is not reached
    ),
    (
        "keys that differ",
        lambda s: s.post(
            DEFINITION["name"], json={"idempotency_key": "x"}, headers={"Idempotency-Key": "y"}
        ),
        True,
    ),
    (
        "an empty header key",
        lambda s: s.post(DEFINITION["name"], json={}, headers={"Idempotency-Key": ""}),
        False,
    ),
    (
        "a header key too long",
        lambda s: s.post(DEFINITION["name"], json={}, headers={"Idempotency-Key": LONG}),
        False,
    ),
    ("a payload not an object", lambda s: s.post(DEFINITION["name"], json={"payload": 3}), False),
    ("an unknown field", lambda s: s.post(DEFINITION["name"], json={"nope": 1}), False),
    ("a list for a body", lambda s: s.post(DEFINITION["name"], json=[]), False),
    ("no body", lambda s: s.post(DEFINITION["name"]), False),
    ("a dry run", lambda s: s.post(DEFINITION["name"], json={"dry_run": True}), False),
    (
        "a dry-run field without dry_run",
        lambda s: s.post(DEFINITION["name"], json={"start_date": "2026-01-01"}),
        False,
    ),
    ("no key", lambda s: s.post(DEFINITION["name"], json={}, auth="none"), True),
    ("a Basic credential", lambda s: s.post(DEFINITION["name"], json={}, auth="basic"), True),
    ("X-API-Key", lambda s: s.post(DEFINITION["name"], json={}, auth="x-api-key"), True),
    (
        "a key without the scope",
        lambda s: s.post(DEFINITION["name"], json={}, auth="read-only"),
        True,
    ),
    ("an unknown automation", lambda s: s.post("nope", json={}), True),
    (
        "no key and a bad body",
        lambda s: s.post(DEFINITION["name"], json={"payload": 3}, auth="none"),
        False,
    ),
]


def test_both_paths_answer_alike(db: Database, sides: tuple[Side, Side]) -> None:
    fast, slow = sides
    for what, send, by_fast_path in CASES:  # in order: the repeats need what came before
        before = fast.taken
        fast_answer, slow_answer = _answer(send(fast)), _answer(send(slow))
        assert fast_answer == slow_answer, what
        assert (fast.taken > before) is by_fast_path, what
        assert _runs(db, fast.tenant_id) == _runs(db, slow.tenant_id), what
    assert fast.taken == sum(f for _, _, f in CASES)


def _runs(db: Database, tenant_id: str) -> int:
    with db.read() as conn:
        query = select(func.count()).select_from(runs).where(runs.c.tenant_id == tenant_id)
        return int(conn.execute(query).scalar_one())


def test_another_tenants_automation_is_not_found_on_the_fast_path(
    db: Database, sides: tuple[Side, Side]
) -> None:
    """Another tenant's automation, by its id, is 404 and starts nothing in either tenant."""
    fast, slow = sides
    before = fast.taken
    response = fast.post(slow.automation_id, json={"payload": {"n": 1}})
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "automation_not_found"
    assert fast.taken == before + 1  # refused by the fast path itself
    assert _runs(db, fast.tenant_id) == 0
    assert _runs(db, slow.tenant_id) == 0


def test_the_fast_path_knows_every_parameter_of_the_trigger() -> None:
    """A parameter added to the endpoint must be handled by ``_trigger_fast`` too (or declined).

    If this fails, read the new parameter in ``_trigger_fast`` (or decline
    requests that carry it) and add it here.
    """
    assert list(inspect.signature(trigger_automation).parameters) == [
        "request",
        "response",
        "automation_id",
        "body",
        "idempotency_key_header",
        "principal",
    ]


def test_a_declined_request_is_charged_once(
    db: Database, new_tenant: NewTenant, new_key: NewKey
) -> None:
    """A request the fast path declines takes one token from its key's rate limit, not two."""
    tenant = new_tenant("limited")
    token = new_key(tenant["id"])
    auth = {"Authorization": f"Bearer {token}"}
    with make_client(db, rate_limit="1/minute", rate_limit_burst=2) as client:
        client.post("/api/v1/automations", json=DEFINITION, headers=auth)  # one token
        path = PATH.format(ref=DEFINITION["name"])
        bad = client.post(path, json={"payload": 3}, headers=auth)
        assert bad.status_code == 422, bad.text  # declined, refused by FastAPI: the second token
        third = client.post(path, json={}, headers=auth)
        assert third.status_code == 429, third.text
