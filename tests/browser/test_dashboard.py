"""The operator's path in a real browser: sign in, find a failed run, retry it, watch it finish.

Also: a cross-site form post is refused, hostile data in a run executes
nothing, and no page logs an error or fails a request (``conftest.Watch``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import WAIT, Stack, Watch, shoot, sign_in

SCRIPT = "<script>alert('payload')</script>"
ONERROR = "<img src=x onerror=alert('payload')>"
MAIL_HTML = "<p>Hello</p><script>alert('mail')</script><img src=x onerror=alert('mail')>"


@pytest.fixture(scope="module")
def runs(stack: Stack) -> dict[str, str]:
    """A failed run (its HTTP step fails once), a completed one, and one full of hostile data."""
    stack.api(
        "PUT",
        "/templates/hello",
        {"channel": "email", "subject": f"Hi {SCRIPT}", "text": ONERROR, "html": MAIL_HTML},
    )
    stack.api(
        "POST",
        "/automations",
        {
            "name": "checkout-sync",
            "trigger": {"type": "manual"},
            "steps": [
                {"key": "prepare", "type": "set", "vars": {"order": "{{ trigger.payload.order }}"}},
                {
                    "key": "push_to_crm",
                    "type": "http_request",
                    "url": f"{stack.http.url}/fail/1/crm",
                },
                {"key": "done", "type": "set", "vars": {"ok": True}},
            ],
        },
    )
    stack.api(
        "POST",
        "/automations",
        {
            "name": "welcome",
            "trigger": {"type": "manual"},
            "steps": [
                {"key": "note", "type": "set", "vars": {"note": "{{ trigger.payload.note }}"}},
                {
                    "key": "mail",
                    "type": "send_email_template",
                    "template": "hello",
                    "to": "ada@example.com",
                },
            ],
        },
    )
    ok = stack.api("POST", "/automations/welcome/trigger", {"payload": {"note": "fine"}})["id"]
    hostile = stack.api(
        "POST", "/automations/welcome/trigger", {"payload": {"note": SCRIPT + ONERROR}}
    )["id"]
    failed = stack.api(
        "POST", "/automations/checkout-sync/trigger", {"payload": {"order": "A-17"}}
    )["id"]
    stack.wait_for(ok, {"completed"})
    stack.wait_for(hostile, {"completed"})
    stack.wait_for(failed, {"failed"})
    return {"failed": failed, "ok": ok, "hostile": hostile}


def test_find_a_failed_run_and_retry_it_from_the_failed_step(
    page: Page, stack: Stack, runs: dict[str, str]
) -> None:
    sign_in(page, stack)
    assert page.url == f"{stack.url}/ui/runs"
    assert page.locator("table.runs tbody tr").count() == 3
    shoot(page, "runs-list")

    # Find it by filter: the filters land in the URL.
    page.check("input[name=status][value=failed]")
    page.fill("input[name=automation]", "checkout-sync")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"status=failed.*automation=checkout-sync"))
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 1
    assert rows.first.locator(".badge").inner_text() == "failed"
    shoot(page, "runs-list-filtered")

    # The run page: which step failed, and why.
    rows.first.locator(f"a[href$='{runs['failed']}']").click()
    page.wait_for_url(re.compile(runs["failed"]))
    step = page.locator("#step-push_to_crm")
    assert step.locator("h3 .badge").inner_text() == "failed"
    assert "500" in step.locator(".error-box").inner_text()
    assert page.locator("#step-done h3 .badge").inner_text() == "pending" or (
        page.locator("#step-done h3 .badge").inner_text() in ("skipped", "cancelled")
    )
    shoot(page, "run-failed")

    # Retry from the failed step (the server answers 200 this time): a new run.
    page.fill("#retry-from-failed >> xpath=.. >> input[name=reason]", "the CRM is back")
    page.click("#retry-from-failed")
    page.wait_for_url(lambda url: "/ui/runs/" in url and runs["failed"] not in url)
    new_id = page.url.rsplit("/", 1)[1]
    # The page follows the run: it shows "completed" without being reloaded by hand.
    # (A locator check, not wait_for_function: that evaluates a string, which the CSP refuses.)
    expect(page.locator("#run-status")).to_have_text("completed", timeout=WAIT * 1000)
    assert page.locator("#step-prepare").inner_text().count("reused from") == 1
    assert page.locator("#step-push_to_crm h3 .badge").inner_text() == "completed"
    assert page.locator(f"a[href='/ui/runs/{runs['failed']}']").count() >= 1  # retry of
    assert "the CRM is back" in page.locator("table.history").inner_text()
    assert stack.api("GET", f"/runs/{new_id}")["retry_of"] == runs["failed"]
    shoot(page, "run-retried")

    # A step's permalink scrolls to it; the local-time toggle changes the shown times.
    page.goto(f"{stack.url}/ui/runs/{new_id}#step-done")
    utc = page.locator("#step-done time").first.inner_text()
    page.click(".js-localtime")
    assert page.locator(".js-localtime").get_attribute("aria-pressed") == "true"
    assert re.search(r"[+-]\d\d:\d\d$", page.locator("#step-done time").first.inner_text())
    page.click(".js-localtime")
    assert page.locator("#step-done time").first.inner_text() == utc

    # Sign out: the pages send the browser back to the login page.
    page.click(".js-logout")
    page.wait_for_url(re.compile(r"/ui/login$"))
    shoot(page, "login")
    page.goto(f"{stack.url}/ui/runs")
    page.wait_for_url(re.compile(r"/ui/login\?next="))


class _EvilHandler(BaseHTTPRequestHandler):
    """Another origin (same host, other port) with forms posting to the dashboard's API."""

    target = ""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        body = (
            f'<!doctype html><form id="plain" method="post" action="{self.target}">'
            '<button id="go">go</button></form>'
            f'<form id="guess" method="post" action="{self.target}">'
            '<input name="csrf_token" value="a-guess"><button id="guess-go">go</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def evil_site(stack: Stack, runs: dict[str, str]) -> Iterator[str]:
    handler = type(
        "Handler", (_EvilHandler,), {"target": f"{stack.url}/api/v1/runs/{runs['ok']}/retry"}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_cross_site_form_post_is_refused(
    page: Page, stack: Stack, runs: dict[str, str], watch: Watch, evil_site: str
) -> None:
    sign_in(page, stack)  # the browser holds a valid session cookie
    watch.expect(r"^40[13] for POST .*/retry$")
    watch.expect(r"^415 for POST .*/retry$")
    watch.expect(r"^console error on .*(403|415)")
    # An empty form: the cookie goes along (same site, another origin), the CSRF check refuses.
    # With fields (a guessed token) the body is not JSON: refused before anything (415).
    for button, status, code in (
        ("#go", 403, "csrf_failed"),
        ("#guess-go", 415, "unsupported_media_type"),
    ):
        page.goto(evil_site)
        with page.expect_response(lambda r: r.url.endswith("/retry")) as answer:
            page.click(button)
        response = answer.value
        assert response.status == status
        assert response.json()["code"] == code
    assert stack.api("GET", f"/runs/{runs['ok']}")["retried_by"] == []


def test_hostile_payloads_execute_nothing(
    page: Page, stack: Stack, runs: dict[str, str], watch: Watch
) -> None:
    # What the defences log when they block the email's script and image is expected.
    watch.expect(r"Blocked script execution in 'about:srcdoc'")
    watch.expect(r"Content Security Policy")
    watch.expect(r"^request failed: GET .*/ui/runs/x: csp$")  # the email's <img src=x>, refused
    sign_in(page, stack, start=f"/ui/runs/{runs['hostile']}")
    page.wait_for_load_state("load")
    note = page.locator("#step-note pre.json").inner_text()
    assert SCRIPT in note  # shown as text
    assert ONERROR in note
    assert page.evaluate("document.querySelectorAll('script').length") == 1  # ours only
    assert page.locator("img").count() == 0
    frame = page.frame_locator("iframe.mail")
    assert frame.locator("p").inner_text() == "Hello"  # the email is shown, inert
    assert page.locator("iframe.mail").get_attribute("sandbox") == ""
    shoot(page, "run-hostile")
    page.goto(f"{stack.url}/ui/runs?automation=welcome")
    assert page.locator("table.runs tbody tr").count() == 2
    assert watch.dialogs == []


def test_a_running_run_is_followed_live_and_can_be_paused(page: Page, stack: Stack) -> None:
    stack.api(
        "POST",
        "/automations",
        {
            "name": "slow-report",
            "trigger": {"type": "manual"},
            "steps": [{"key": "pause", "type": "delay", "duration": "PT10M"}],
        },
    )
    run_id = stack.api("POST", "/automations/slow-report/trigger", {"payload": {}})["id"]
    stack.wait_for(run_id, {"waiting"})
    sign_in(page, stack, start=f"/ui/runs/{run_id}")
    status = page.locator("#run-status")
    assert status.inner_text() == "waiting"
    shoot(page, "run-live")
    # Paused: the run changes (cancelled through the API), the page stays as it was.
    page.click(".js-live-toggle")
    assert page.locator(".live-state").inner_text() == "live updates paused"
    stack.api("POST", f"/runs/{run_id}/cancel", {"reason": "seen live"})
    page.wait_for_timeout(2500)  # more than the stream needs: a live page would have moved on
    assert status.inner_text() == "waiting"
    # Resumed: the page catches up by itself.
    page.click(".js-live-toggle")
    # (A locator check, not wait_for_function: that evaluates a string, which the CSP refuses.)
    expect(status).to_have_text("cancelled", timeout=WAIT * 1000)
    assert page.locator(".live").count() == 0  # a finished run is not followed


def test_bulk_cancel_over_everything_the_filter_matches(
    page: Page, stack: Stack, watch: Watch
) -> None:
    stack.api(
        "POST",
        "/automations",
        {
            "name": "long-wait",
            "trigger": {"type": "manual"},
            "steps": [{"key": "nap", "type": "delay", "duration": "PT10M"}],
        },
    )
    ids = [
        stack.api("POST", "/automations/long-wait/trigger", {"payload": {}})["id"] for _ in range(3)
    ]
    for run_id in ids:
        stack.wait_for(run_id, {"waiting"})
    sign_in(page, stack, start="/ui/runs?automation=long-wait")
    assert page.locator("#bulk-cancel").inner_text() == "Cancel all 3 matching runs still going"
    assert page.locator("#bulk-replay").is_disabled()  # nothing failed
    page.fill("form[data-kind=cancel] input[name=reason]", "maintenance")
    page.click("#bulk-cancel")
    expect(page.locator(".bulk-progress")).to_contain_text("completed, 3 of 3 done")
    assert watch.dialogs == ["confirm: Cancel 3 run(s) matching these filters?"]
    for run_id in ids:
        assert stack.api("GET", f"/runs/{run_id}")["status"] == "cancelled"
    # Then the list shows the new state by itself: rows, and the bulk counts.
    expect(page.locator(".bulk-progress")).to_contain_text("the list is up to date")
    assert page.locator("table.runs tbody .badge").all_inner_texts() == ["cancelled"] * 3
    assert page.locator("#bulk-cancel").inner_text() == "Cancel all 0 matching runs still going"
    assert page.locator("#bulk-cancel").is_disabled()
    assert page.locator("#bulk-replay").inner_text() == "Replay all 3 matching runs that failed"
    assert page.locator("#bulk-replay").is_enabled()
    shoot(page, "runs-bulk-cancel")


def test_a_run_links_the_runs_it_started(page: Page, stack: Stack) -> None:
    for definition in (
        {"name": "label-print", "steps": [{"key": "print", "type": "set", "vars": {"ok": True}}]},
        {
            "name": "ship-order",
            "steps": [
                {"key": "label", "type": "trigger_automation", "automation": "label-print"},
                {"key": "boom", "type": "set", "vars": {"x": "{{ trigger.payload.nope.x }}"}},
            ],
        },
        {
            "name": "ship-order-failed",
            "trigger": {"type": "automation_failure", "automations": ["ship-order"]},
            "steps": [{"key": "alert", "type": "set", "vars": {"page": "on-call"}}],
        },
    ):
        stack.api("POST", "/automations", {"trigger": {"type": "manual"}, **definition})
    run_id = stack.api("POST", "/automations/ship-order/trigger", {"payload": {}})["id"]
    stack.wait_for(run_id, {"failed"})
    (child,) = stack.api("GET", "/runs?automation_name=label-print")["items"]
    (alert,) = stack.api("GET", "/runs?automation_name=ship-order-failed")["items"]
    sign_in(page, stack, start=f"/ui/runs/{run_id}")
    assert "label-print" in page.locator("#lineage-children").inner_text()
    assert "ship-order-failed" in page.locator("#lineage-failure-runs").inner_text()
    shoot(page, "run-lineage")
    page.click(f"#lineage-failure-runs a[href='/ui/runs/{alert['id']}']")
    page.wait_for_url(re.compile(alert["id"]))
    page.goto(f"{stack.url}/ui/runs/{child['id']}")
    page.click(f"a[href='/ui/runs/{run_id}']")  # its parent
    page.wait_for_url(re.compile(run_id))
