"""The dashboard's pages over HTTP: redirects, headers, runs list filters, scopes, tenants."""

from __future__ import annotations

import json
import re
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from conveyor.domain.scopes import ALL_SCOPES, Scope
from conveyor.store.db import Database
from conveyor.testing.factories import make_tenant
from conveyor.web import runs_list
from conveyor.web.rendering import CSP
from tests.api.helpers import make_client
from tests.api.run_data import make_data
from tests.web.conftest import NewKey, SignedIn


class _Audit(HTMLParser):
    """What a page holds that the CSP would block, and its links and forms."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self.links: list[str] = []
        self.forms: list[dict[str, str | None]] = []
        self.scripts: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.blocked.append(f"<{tag} {name}=…>")
        if tag == "style":
            self.blocked.append("<style>")
        if tag == "script":
            self.scripts.append(found.get("src"))
            if not found.get("src"):
                self.blocked.append("inline <script>")
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))
        if tag == "form":
            self.forms.append(found)
        if found.get("href", "") and str(found["href"]).startswith("javascript:"):
            self.blocked.append("javascript: link")


def audit(response: Any) -> _Audit:
    """Check a page's security headers and that nothing in it needs an unsafe CSP; parse it."""
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-type"].startswith("text/html")
    parsed = _Audit()
    parsed.feed(response.text)
    assert parsed.blocked == []
    return parsed


def run_links(page: _Audit) -> list[str]:
    return [
        link.rsplit("/", 1)[1] for link in page.links if re.search(r"/ui/runs/[0-9a-f-]{36}$", link)
    ]


def test_root_and_pages_send_a_stranger_to_the_login_page(db: Database) -> None:
    client = make_client(db)
    client.follow_redirects = False
    home = client.get("/")
    assert (home.status_code, home.headers["location"]) == (303, "/ui/login")
    runs = client.get("/ui/runs?status=failed&automation=a%20b")
    assert runs.status_code == 303
    target = urlsplit(runs.headers["location"])
    assert target.path == "/ui/login"
    assert parse_qs(target.query)["next"] == ["/ui/runs?status=failed&automation=a%20b"]
    login = client.get(runs.headers["location"])
    page = audit(login)
    assert login.status_code == 200
    assert page.forms[0]["data-next"] == "/ui/runs?status=failed&automation=a%20b"
    assert page.scripts == ["/ui/static/conveyor.js"]
    # A bad cookie is no session.
    client.cookies.set("conveyor_token", "cvk_not-a-key")
    assert client.get("/ui/runs/0193aaaa-0000-7000-8000-000000000000").status_code == 303


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://evil.example/", "/ui/runs"),
        ("//evil.example/ui/", "/ui/runs"),
        ("/ui//evil.example", "/ui/runs"),
        ("/api/v1/keys", "/ui/runs"),
        ("/ui/runs/x?y=1", "/ui/runs/x?y=1"),
    ],
    ids=["other-site", "scheme-relative", "double-slash", "not-a-page", "a-page"],
)
def test_login_goes_back_only_to_a_dashboard_page(
    sqlite_db: Database, given: str, kept: str
) -> None:
    client = make_client(sqlite_db)
    page = audit(client.get("/ui/login", params={"next": given}))
    assert page.forms[0]["data-next"] == kept


def test_signed_in_root_goes_to_runs_and_login_page_moves_on(signed_in: SignedIn) -> None:
    client = signed_in()
    assert client.get("/").headers["location"] == "/ui/runs"
    assert client.get("/ui/login?next=/ui/runs%3Fstatus%3Dfailed").headers["location"] == (
        "/ui/runs?status=failed"
    )


def test_static_files_are_served(db: Database) -> None:
    client = make_client(db)
    for name, kind in (("conveyor.js", "javascript"), ("conveyor.css", "text/css")):
        response = client.get(f"/ui/static/{name}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
    # The script has no eval and talks to this server only.
    script = client.get("/ui/static/conveyor.js").text
    assert "eval(" not in script
    assert "http://" not in script
    assert "https://" not in script


def test_runs_list_filters_live_in_the_url(db: Database, tenant: str, signed_in: SignedIn) -> None:
    data = make_data(db, tenant)
    client = signed_in()

    def listed(query: str) -> list[str]:
        response = client.get(f"/ui/runs?{query}")
        assert response.status_code == 200, response.text
        return run_links(audit(response))

    assert listed("") == data.ids()
    assert listed("status=failed&status=exhausted") == data.ids(
        lambda r: r.status in ("failed", "exhausted")
    )
    assert listed("automation=beta") == data.ids(lambda r: r.automation == "beta")
    assert listed("trigger_type=schedule") == data.ids(lambda r: r.trigger_type == "schedule")
    assert listed("identity=ada%40x.org") == data.ids(lambda r: r.identity_value == "ada@x.org")
    assert listed("tag=blue") == data.ids(lambda r: "blue" in r.tags)
    assert listed("from=2026-03-01T12:03&to=2026-03-01T12:05:00Z") == data.ids(
        lambda r: r.created_at.minute in (3, 4)
    )
    # The form shows what is filtered, so the URL round-trips.
    page = client.get("/ui/runs?status=failed&automation=beta&trigger_type=event").text
    assert re.search(r'value="failed" checked', page)
    assert 'name="automation" value="beta"' in page
    assert '<option value="event" selected>' in page


def test_runs_list_window_is_relative_to_now(
    db: Database, tenant: str, signed_in: SignedIn
) -> None:
    make_data(db, tenant)  # every run is from March 2026, long before "now"
    client = signed_in()
    assert run_links(audit(client.get("/ui/runs?window=24h"))) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=bogus", "unknown status"),
        ("trigger_type=fax", "trigger_type: one of"),
        ("window=3y", "window: one of"),
        ("from=yesterday", "from: not a time"),
        ("cursor=garbage", "not valid any more"),
        ("automation=" + "x" * 501, "at most 500"),
        ("identity=a%00b", "U+0000"),
    ],
    ids=["status", "trigger", "window", "time", "cursor", "too-long", "nul"],
)
def test_bad_filters_are_400_with_the_reason(
    db: Database, signed_in: SignedIn, query: str, message: str
) -> None:
    response = signed_in().get(f"/ui/runs?{query}")
    assert response.status_code == 400
    audit(response)
    assert message in response.text


def test_runs_list_pages_with_cursors_both_ways(
    db: Database, tenant: str, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_data(db, tenant)
    monkeypatch.setattr(runs_list, "PAGE_SIZE", 3)
    client = signed_in()
    expected = data.ids(lambda r: r.automation == "alpha")
    seen: list[list[str]] = []
    url: str | None = "/ui/runs?automation=alpha"
    pages: list[str] = []
    while url:
        pages.append(url)
        html = client.get(url)
        page = audit(html)
        seen.append(run_links(page))
        older = re.search(r'rel="next" href="([^"]+)"', html.text)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert [i for chunk in seen for i in chunk] == expected
    assert all("automation=alpha" in p for p in pages)  # the filter rides along
    # Going back from the last page walks the same pages in reverse.
    html = client.get(pages[-1]).text
    back: list[list[str]] = []
    while (newer := re.search(r'rel="prev" href="([^"]+)"', html)) is not None:
        html = client.get(newer.group(1).replace("&amp;", "&")).text
        back.append(run_links(_parsed(html)))
    assert back == list(reversed(seen[:-1]))


def _parsed(html: str) -> _Audit:
    parsed = _Audit()
    parsed.feed(html)
    return parsed


def test_tenants_see_only_their_own_runs(
    db: Database, tenant: str, new_key: NewKey, signed_in: SignedIn
) -> None:
    data = make_data(db, tenant)
    other = make_tenant(db, "globex")
    client = signed_in(tenant_id=other)
    assert run_links(audit(client.get("/ui/runs"))) == []
    response = client.get(f"/ui/runs/{data.runs[0].id}")
    assert response.status_code == 404
    audit(response)
    assert data.runs[0].id in response.text  # it says which run was not found


def test_a_key_without_runs_read_sees_no_runs(
    db: Database, tenant: str, signed_in: SignedIn
) -> None:
    data = make_data(db, tenant)
    client = signed_in(scopes=[Scope.AUTOMATIONS_READ.value])
    response = client.get("/ui/runs")
    assert response.status_code == 403
    assert "runs:read" in response.text
    assert run_links(audit(response)) == []
    assert client.get(f"/ui/runs/{data.runs[0].id}").status_code == 404


def test_links_carry_the_public_urls_path(db: Database, tenant: str, new_key: NewKey) -> None:
    data = make_data(db, tenant)
    # The public URL is HTTPS, so the cookies are Secure: the browser is on HTTPS too.
    client = make_client(
        db, public_url="https://ops.example/conveyor", base_url="https://ops.example"
    )
    client.follow_redirects = False
    client.post(
        "/api/v1/session",
        json={"api_key": new_key(tenant, ALL_SCOPES)},
        headers={"Origin": "https://ops.example"},
    )
    assert client.get("/").headers["location"] == "/conveyor/ui/runs"
    page = audit(client.get("/ui/runs"))
    assert f"/conveyor/ui/runs/{data.ids()[0]}" in page.links
    assert '<script src="/conveyor/ui/static/conveyor.js"' in client.get("/ui/runs").text
    run_page = client.get(f"/ui/runs/{data.runs[0].id}").text
    assert f"https://ops.example/conveyor/ui/runs/{data.runs[0].id}" in run_page


def test_bulk_actions_name_what_they_would_act_on(
    db: Database, tenant: str, signed_in: SignedIn
) -> None:
    data = make_data(db, tenant)
    html = signed_in().get("/ui/runs?automation=alpha&tag=blue").text
    # alpha's real runs: pending, running and waiting can be cancelled; timed-out replayed.
    assert "Cancel all 3 matching runs still going" in html
    assert "Replay all 1 matching run that failed" in html
    filters = re.search(r'data-kind="cancel" data-count="3" data-filters="([^"]+)"', html)
    assert filters is not None
    # The automation named is sent by id (what the list and its counts used).
    assert json.loads(unescape(filters.group(1))) == {"automation_id": data.alpha, "tag": "blue"}
    none = signed_in().get("/ui/runs?status=completed").text
    assert re.search(r'id="bulk-cancel" class="danger" disabled', none)
    assert "Cancel all 0 matching runs" in none
    read_only = signed_in(scopes=[Scope.RUNS_READ.value]).get("/ui/runs").text
    assert "js-bulk" not in read_only


def test_the_live_list_asks_the_api_for_the_pages_filters(
    db: Database, tenant: str, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_data(db, tenant)
    client = signed_in()
    query = "status=failed&status=exhausted&automation=alpha&from=2026-03-01T12:03&to=2026-03-02"
    html = client.get(f"/ui/runs?{query}").text
    found = re.search(r'data-api-query="([^"]*)" data-cursor="" data-since="([^"]+)"', html)
    assert found is not None
    api_query = unescape(found.group(1))
    assert parse_qs(api_query) == {
        "status": ["failed", "exhausted"],
        "automation_name": ["alpha"],
        "created_after": ["2026-03-01T12:03:00Z"],
        "created_before": ["2026-03-02T00:00:00Z"],
    }
    # The API takes them as they are, and lists what the page lists.
    listed = client.get(f"/api/v1/runs?{api_query}", headers={"Accept": "application/json"})
    assert listed.status_code == 200, listed.text
    assert [r["id"] for r in listed.json()["items"]] == data.ids(
        lambda r: (
            r.automation == "alpha"
            and r.status in ("failed", "exhausted")
            and (r.created_at.day, r.created_at.hour, r.created_at.minute) >= (1, 12, 3)
        )
    )
    # A deeper page names its cursor: the script counts no new runs there, and its
    # fallback poll asks the API for that page (the same keyset cursor).
    monkeypatch.setattr(runs_list, "PAGE_SIZE", 2)
    first = client.get("/ui/runs?automation=alpha").text
    assert 'data-cursor=""' in first
    older = re.search(r'rel="next" href="/ui/runs\?([^"]+)"', first)
    assert older is not None
    cursor = parse_qs(unescape(older.group(1)))["cursor"][0]
    deeper = client.get(f"/ui/runs?{unescape(older.group(1))}").text
    assert f'data-cursor="{cursor}"' in deeper
    polled = client.get(f"/api/v1/runs?automation_name=alpha&limit=2&cursor={cursor}").json()
    assert [r["id"] for r in polled["items"]] == run_links(
        audit(client.get(f"/ui/runs?{unescape(older.group(1))}"))
    )
    # A page whose filters are wrong follows nothing.
    assert "data-api-query" not in client.get("/ui/runs?status=nope").text
