"""Sessions (``/api/v1/session``) and the CSRF check of cookie-authenticated writes."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, Request

from conveyor.api.app import create_app
from conveyor.api.auth import current_principal
from conveyor.api.routing import HygienicRoute, accepts_form
from conveyor.cli.main import uvicorn_options
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.tables import api_keys, automations, runs
from tests.api.conftest import NewKey
from tests.api.helpers import DEFINITION, TestClient, assert_problem, count, make_client
from tests.api.live import live_server

HERE = "http://testserver"  # the origin of make_client's requests
EVIL = "https://evil.example"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def cookies_set(response: Any) -> dict[str, Any]:
    """The cookies a response sets, by name, with their attributes."""
    found: dict[str, Any] = {}
    for line in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(line)
        found.update(jar)
    return found


def login(client: TestClient, token: str, **kw: Any) -> Any:
    """Sign in with ``token`` from this server's origin; check it worked."""
    headers = kw.pop("headers", None) or {"Origin": HERE}
    response = client.post("/api/v1/session", json={"api_key": token}, headers=headers, **kw)
    assert response.status_code == 200, response.text
    return response


def test_login_sets_the_key_and_a_csrf_cookie(db: Database, token: str) -> None:
    client = make_client(db)
    response = login(client, token)
    set_ = cookies_set(response)
    session, csrf = set_["conveyor_token"], set_["conveyor_csrf"]
    assert session.value == token
    assert (session["httponly"], session["samesite"], session["path"]) == (True, "lax", "/")
    assert (csrf["httponly"], csrf["samesite"], csrf["path"]) == ("", "lax", "/")
    assert not session["secure"]  # plain HTTP
    assert not csrf["secure"]
    body = response.json()
    assert body["csrf_token"] == csrf.value
    assert len(csrf.value) >= 32
    assert "automations:write" in body["scopes"]
    assert response.headers["cache-control"] == "no-store"
    # The browser is now signed in: reads need nothing more, writes the token.
    assert client.get("/api/v1/automations").status_code == 200
    created = client.post(
        "/api/v1/automations",
        json=DEFINITION,
        headers={"X-CSRF-Token": csrf.value, "Origin": HERE},
    )
    assert created.status_code == 201, created.text
    # A second sign-in gives a new CSRF token.
    assert login(client, token).json()["csrf_token"] != csrf.value


def test_login_takes_an_html_form(db: Database, token: str) -> None:
    client = make_client(db)
    response = client.post(
        "/api/v1/session",
        content=f"api_key={token}&submit=Sign+in",
        headers={**FORM, "Origin": HERE},
    )
    assert response.status_code == 200, response.text
    assert cookies_set(response)["conveyor_token"].value == token


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Origin": EVIL}, "csrf_failed"),
        ({"Origin": "null"}, "csrf_failed"),
        ({}, "csrf_failed"),  # no Origin, no Referer
        ({"Referer": f"{EVIL}/login"}, "csrf_failed"),
        ({"Origin": EVIL, "Referer": f"{HERE}/login"}, "csrf_failed"),  # Origin wins
    ],
    ids=["other-origin", "null-origin", "neither", "other-referer", "origin-before-referer"],
)
def test_login_from_another_site_is_403_without_cookies(
    sqlite_db: Database, headers: dict[str, str], code: str
) -> None:
    # Login CSRF: another site must not sign the browser in with the attacker's key.
    client = make_client(sqlite_db)
    response = client.post(
        "/api/v1/session", content="api_key=cvk_attacker", headers=FORM | headers
    )
    assert_problem(response, 403, code)
    assert "set-cookie" not in response.headers


def test_login_from_this_sites_page_by_referer(db: Database, token: str) -> None:
    login(make_client(db), token, headers={"Referer": f"{HERE}/login?x=1"})


def test_invalid_login_is_401_and_limited_like_failed_auth(db: Database, token: str) -> None:
    # A burst of 4 failures over two minutes.
    client = make_client(db, auth_failure_limit="2/minute")
    for _ in range(4):
        response = client.post(
            "/api/v1/session", json={"api_key": "cvk_guess"}, headers={"Origin": HERE}
        )
        assert_problem(response, 401, "unauthenticated")
        assert "set-cookie" not in response.headers
    # Over the limit, even the right key is refused before it is looked up.
    refused = client.post("/api/v1/session", json={"api_key": token}, headers={"Origin": HERE})
    assert_problem(refused, 429, "rate_limited")
    assert "set-cookie" not in refused.headers


@pytest.mark.parametrize(
    ("body", "loc"),
    [({}, ["body", "api_key"]), ({"api_key": "k", "x": 1}, ["body", "x"]), (None, ["body"])],
    ids=["missing", "unknown-field", "no-body"],
)
def test_login_body_is_validated(sqlite_db: Database, body: Any, loc: list[str]) -> None:
    client = make_client(sqlite_db)
    kw: dict[str, Any] = {} if body is None else {"json": body}
    response = client.post("/api/v1/session", headers={"Origin": HERE}, **kw)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == loc


def test_a_cross_site_form_post_with_the_cookie_does_nothing(
    db: Database, token: str, auth: dict[str, str]
) -> None:
    """The reproduction: an empty <form method=post> on another site, the victim signed in."""
    automation = make_client(db).post("/api/v1/automations", json=DEFINITION, headers=auth).json()
    browser = make_client(db)
    login(browser, token)
    forged = {**FORM, "Origin": EVIL}
    targets = [
        f"/api/v1/automations/{automation['id']}/trigger",
        "/api/v1/runs/bulk/cancel",
        "/api/v1/keys",
    ]
    for path in targets:
        assert_problem(browser.post(path, content=b"", headers=forged), 403, "csrf_failed")
        # With fields, the form is not even JSON.
        response = browser.post(path, content=b"label=x&scopes=keys:admin", headers=forged)
        assert_problem(response, 415, "unsupported_media_type")
    assert_problem(
        browser.delete(f"/api/v1/automations/{automation['id']}", headers={"Origin": EVIL}),
        403,
        "csrf_failed",
    )
    assert count(db, runs) == 0
    assert count(db, api_keys) == 1
    assert client_sees_automation(db, auth, automation["id"])


def client_sees_automation(db: Database, auth: dict[str, str], ref: str) -> bool:
    """Whether the automation is still there."""
    return make_client(db).get(f"/api/v1/automations/{ref}", headers=auth).status_code == 200


CSRF_CASES = [
    ({}, 403),
    ({"X-CSRF-Token": "wrong"}, 403),
    ({"X-CSRF-Token": "\u00e9t\u00e9".encode("latin-1")}, 403),  # not ASCII: no 500
    ({"X-CSRF-Token": "<csrf>"}, 403),  # no Origin, no Referer
    ({"X-CSRF-Token": "<csrf>", "Origin": EVIL}, 403),
    ({"X-CSRF-Token": "<csrf>", "Origin": "null"}, 403),
    ({"X-CSRF-Token": "<csrf>", "Origin": "http://testserver.evil.example"}, 403),
    ({"X-CSRF-Token": "<csrf>", "Origin": HERE}, 201),
    ({"X-CSRF-Token": "<csrf>", "Origin": "HTTP://TestServer:80"}, 201),
    ({"X-CSRF-Token": "<csrf>", "Referer": f"{HERE}/automations/new"}, 201),
]


@pytest.mark.parametrize(
    ("headers", "status"),
    CSRF_CASES,
    ids=[
        "no-token",
        "wrong-token",
        "non-ascii-token",
        "no-origin",
        "other-origin",
        "null-origin",
        "lookalike-origin",
        "same-origin",
        "same-origin-spelled-differently",
        "same-referer",
    ],
)
def test_a_cookie_write_needs_the_token_and_this_origin(
    db: Database, token: str, headers: dict[str, str], status: int
) -> None:
    client = make_client(db)
    csrf = login(client, token).json()["csrf_token"]
    sent = {k: v.replace("<csrf>", csrf) if isinstance(v, str) else v for k, v in headers.items()}
    response = client.post("/api/v1/automations", json=DEFINITION, headers=sent)
    if status == 403:
        assert_problem(response, 403, "csrf_failed")
        assert count(db, automations) == 0
    else:
        assert response.status_code == status, response.text


@pytest.mark.parametrize(
    "carrier",
    [lambda t: {"Authorization": f"Bearer {t}"}, lambda t: {"X-API-Key": t}],
    ids=["bearer", "x-api-key"],
)
def test_bearer_and_header_keys_are_not_csrf_checked(
    db: Database, token: str, new_key: NewKey, tenant: dict[str, Any], carrier: Any
) -> None:
    client = make_client(db)
    login(client, token)  # the cookie is there too, but the header's key is the one used
    response = client.post(
        "/api/v1/automations",
        json=DEFINITION,
        headers={**carrier(new_key(tenant["id"])), "Origin": EVIL},
    )
    assert response.status_code == 201, response.text


def test_the_public_url_is_the_origin_when_set(db: Database, token: str) -> None:
    public = "https://conveyor.example.com"
    client = make_client(db, public_url=f"{public}/ignored/path")
    response = login(client, token, headers={"Origin": public})
    csrf = response.json()["csrf_token"]
    assert cookies_set(response)["conveyor_token"]["secure"]  # browsers come over HTTPS
    assert_problem(
        client.post("/api/v1/session", json={"api_key": token}, headers={"Origin": HERE}),
        403,
        "csrf_failed",
    )
    # The cookies are Secure, and this client talks plain HTTP: send them by hand.
    cookie = f"conveyor_token={token}; conveyor_csrf={csrf}"
    for origin, status in ((HERE, 403), (public, 201)):
        response = client.post(
            "/api/v1/automations",
            json={**DEFINITION, "name": f"n{status}"},
            headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": origin},
        )
        assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("peer", "trusted", "honoured"),
    [
        (("10.1.2.3", 50000), "10.0.0.0/8", True),
        (("10.1.2.3", 50000), "", False),
        (("192.0.2.7", 50000), "10.0.0.0/8", False),
        (("testclient", 50000), "10.0.0.0/8", False),
    ],
    ids=["trusted-proxy", "none-trusted", "untrusted-peer", "not-an-address"],
)
def test_forwarded_scheme_and_host_only_from_trusted_proxies(
    db: Database, token: str, peer: tuple[str, int], trusted: str, honoured: bool
) -> None:
    client = make_client(db, peer=peer, trusted_proxies=trusted)
    outside = "https://conveyor.example.com"
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "spoofed.example, conveyor.example.com",  # the proxy's is last
        "X-Forwarded-For": "203.0.113.5",
        "Origin": outside,
    }
    response = client.post("/api/v1/session", json={"api_key": token}, headers=forwarded)
    if not honoured:
        assert_problem(response, 403, "csrf_failed")  # the origin is judged on the peer's Host
        return
    assert response.status_code == 200, response.text
    assert cookies_set(response)["conveyor_token"]["secure"]


def test_https_directly_sets_secure_cookies(db: Database, token: str) -> None:
    client = make_client(db, base_url="https://testserver")
    response = login(client, token, headers={"Origin": "https://testserver"})
    assert all(c["secure"] for c in cookies_set(response).values())
    cleared = client.delete(
        "/api/v1/session",
        headers={"X-CSRF-Token": response.json()["csrf_token"], "Origin": "https://testserver"},
    )
    assert all(c["secure"] for c in cookies_set(cleared).values())


def test_logout_clears_both_cookies(db: Database, token: str) -> None:
    client = make_client(db)
    csrf = login(client, token).json()["csrf_token"]
    # With the cookie, signing out is a write like any other.
    assert_problem(client.delete("/api/v1/session"), 403, "csrf_failed")
    response = client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf, "Origin": HERE})
    assert response.status_code == 204, response.text
    cleared = cookies_set(response)
    assert {"conveyor_token", "conveyor_csrf"} <= set(cleared)
    assert all(c["max-age"] == "0" for c in cleared.values())
    assert_problem(client.get("/api/v1/automations"), 401, "unauthenticated")
    # Without a session there is nothing to check, and nothing to refuse.
    assert make_client(db).delete("/api/v1/session").status_code == 204


def test_a_page_form_may_send_the_token_as_a_field(db: Database, token: str) -> None:
    # What the dashboard's pages will do: a plain HTML form with a `csrf_token` field.
    page = APIRouter(route_class=HygienicRoute)

    @page.post("/pages/thing")
    @accepts_form
    async def post_thing(request: Request, principal: Any = Depends(current_principal)) -> Any:
        return {"tenant": principal.tenant_id}

    client = make_client(db)
    app = client.app
    app.include_router(page)  # type: ignore[attr-defined]
    csrf = login(client, token).json()["csrf_token"]
    ok = client.post(
        "/pages/thing", content=f"csrf_token={csrf}&x=1", headers={**FORM, "Origin": HERE}
    )
    assert ok.status_code == 200, ok.text
    bad = client.post("/pages/thing", content="csrf_token=nope", headers={**FORM, "Origin": HERE})
    assert_problem(bad, 403, "csrf_failed")


@pytest.mark.parametrize(
    ("trusted", "secure"), [("", False), (None, True)], ids=["none-trusted", "default-loopback"]
)
def test_the_servers_conveyor_starts_read_forwarded_headers_only_as_configured(
    sqlite_db: Database, trusted: str | None, secure: bool
) -> None:
    """uvicorn as `conveyor serve` runs it: its own proxy handling must not trust loopback."""
    from conveyor.clock import SystemClock
    from conveyor.services import keys as key_service
    from conveyor.services import tenants as tenant_service

    with sqlite_db.transaction() as conn:
        tenant = tenant_service.create_tenant(conn, "acme", now=SystemClock().now())
        _, token = key_service.create_key(
            conn, tenant_id=tenant["id"], scopes=["runs:read"], label="t", now=SystemClock().now()
        )
    overrides = {} if trusted is None else {"trusted_proxies": trusted}
    settings = Settings(database_url="sqlite://", **overrides)
    app = create_app(settings, db=sqlite_db)
    with live_server(app, **uvicorn_options(settings)) as url:
        response = httpx.post(
            f"{url}/api/v1/session",
            json={"api_key": token},
            headers={"X-Forwarded-Proto": "https", "Origin": url.replace("http:", "https:")},
        )
    if secure:
        assert response.status_code == 200, response.text
        assert cookies_set(response)["conveyor_token"]["secure"]
    else:
        assert_problem(response, 403, "csrf_failed")
