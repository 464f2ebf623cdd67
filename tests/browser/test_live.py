"""Live pages in a real browser: run pages and the runs list follow the server over SSE.

Every page is watched (``conftest.Watch``): no console error, no failed
request, other than what a test says it provokes. ``window.conveyorMark`` is
set on a page and read back later: still there means the page was never
reloaded, so what changed came from the live updates.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import WAIT, Stack, Watch, shoot, sign_in

TIMEOUT = WAIT * 1000  # Playwright's milliseconds: only catches a hang
ADA = {"type": "email", "value": "ada@example.com"}


def mark(page: Page) -> None:
    page.evaluate("window.conveyorMark = 'not reloaded'")


def still_marked(page: Page) -> bool:
    return bool(page.evaluate("window.conveyorMark === 'not reloaded'"))


def automation(stack: Stack, name: str, steps: list[dict[str, Any]]) -> None:
    stack.api("POST", "/automations", {"name": name, "trigger": {"type": "manual"}, "steps": steps})


def trigger(stack: Stack, name: str, payload: dict[str, Any] | None = None) -> str:
    body = {"payload": payload or {}, "identity": ADA}
    return str(stack.api("POST", f"/automations/{name}/trigger", body)["id"])


NAP = [{"key": "nap", "type": "delay", "duration": "PT10M"}]


def test_a_running_run_shows_its_new_history_and_its_end_without_reload(
    page: Page, stack: Stack
) -> None:
    automation(
        stack,
        "await-payment",
        [
            {"key": "payment", "type": "wait_for_event", "event": "payment.received"},
            {
                "key": "receipt",
                "type": "set",
                "vars": {"paid": "{{ steps.payment.output.payload.sum }}"},
            },
        ],
    )
    run_id = trigger(stack, "await-payment")
    stack.wait_for(run_id, {"waiting"})
    sign_in(page, stack, start=f"/ui/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("waiting")
    assert page.locator(".live-state").inner_text() == "following the run live"
    history = page.locator("table.history tbody tr")
    before = history.count()
    mark(page)

    event = {"id": str(uuid.uuid4()), "name": "payment.received", "identity": ADA}
    stack.api("POST", "/events", {**event, "payload": {"sum": 42}})
    expect(page.locator("#run-status")).to_have_text("completed", timeout=TIMEOUT)
    lines = page.locator("table.history tbody tr code:not(.data)")
    expect(lines.filter(has_text="run.completed")).to_have_count(1, timeout=TIMEOUT)
    assert lines.filter(has_text="wait.received").count() == 1
    assert history.count() > before
    seqs = [int(s) for s in page.locator("table.history tbody tr td:first-child").all_inner_texts()]
    assert seqs == list(range(1, len(seqs) + 1))  # every line once, in order
    assert page.locator("#step-receipt h3 .badge").inner_text() == "completed"
    assert page.locator(".live").count() == 0  # a finished run is not followed any more
    assert still_marked(page)
    page.locator("table.history").scroll_into_view_if_needed()
    shoot(page, "run-live-completed")


def test_a_redraw_keeps_what_the_reader_typed_and_waits_while_they_type(
    page: Page, stack: Stack
) -> None:
    automation(
        stack,
        "parcel",
        [
            {"key": "packed", "type": "wait_for_event", "event": "parcel.packed"},
            {"key": "shipped", "type": "wait_for_event", "event": "parcel.shipped"},
        ],
    )
    run_id = trigger(stack, "parcel")
    stack.wait_for(run_id, {"waiting"})
    sign_in(page, stack, start=f"/ui/runs/{run_id}")
    mark(page)
    reason = page.locator("#cancel-run >> xpath=.. >> input[name=reason]")
    reason.fill("the parcel was lost")  # the field keeps the focus
    stack.api(
        "POST", "/events", {"id": str(uuid.uuid4()), "name": "parcel.packed", "identity": ADA}
    )
    # The line is appended at once; the redraw waits while the reader types.
    received = page.locator("table.history tbody tr code", has_text="wait.received")
    expect(received).to_have_count(1, timeout=TIMEOUT)
    page.wait_for_timeout(1000)  # more than the redraw's delay
    assert page.locator("#step-packed h3 .badge").inner_text() == "waiting"
    # Leaving the field lets it redraw; what was typed is still there, and the redrawn
    # forms work (the cancel is sent with the typed reason).
    page.locator("h1").click()
    expect(page.locator("#step-packed h3 .badge")).to_have_text("completed", timeout=TIMEOUT)
    assert reason.input_value() == "the parcel was lost"
    assert still_marked(page)
    shoot(page, "run-live-redrawn")
    page.click("#cancel-run")
    expect(page.locator("#run-status")).to_have_text("cancelled", timeout=TIMEOUT)
    assert "the parcel was lost" in page.locator("table.history").inner_text()


def test_the_runs_list_counts_new_runs_updates_rows_in_place_and_pauses(
    page: Page, stack: Stack
) -> None:
    automation(stack, "nightly-sync", NAP)
    first = trigger(stack, "nightly-sync")
    stack.wait_for(first, {"waiting"})
    sign_in(page, stack, start="/ui/runs?automation=nightly-sync")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 1
    banner = page.locator("button.new-runs")
    assert banner.is_hidden()
    mark(page)

    # New runs are counted, not inserted: the table does not move while it is read.
    for _ in range(2):
        trigger(stack, "nightly-sync")
    expect(banner).to_have_text("2 new runs", timeout=TIMEOUT)
    assert rows.count() == 1
    # The counts follow: what a bulk cancel would act on is what its confirmation names.
    expect(page.locator("#bulk-cancel")).to_have_text(
        "Cancel all 3 matching runs still going", timeout=TIMEOUT
    )
    # A row shown changes in place.
    stack.api("POST", f"/runs/{first}/cancel", {"reason": "seen live"})
    row = page.locator(f"tr[data-run='{first}']")
    expect(row.locator(".badge")).to_have_text("cancelled", timeout=TIMEOUT)
    assert row.locator(".badge").get_attribute("class") == "badge s-cancelled"
    expect(page.locator("#bulk-cancel")).to_have_text(
        "Cancel all 2 matching runs still going", timeout=TIMEOUT
    )
    assert page.locator(".list-head .count").inner_text() == "3 matching runs"
    assert page.locator("form[data-kind=cancel]").get_attribute("data-count") == "2"
    assert still_marked(page)
    shoot(page, "runs-live-new")

    # Paused: nothing moves; resumed: it catches up.
    page.click(".live-list .js-live-toggle")
    assert page.locator(".live-list .live-state").inner_text() == "live updates paused"
    third = trigger(stack, "nightly-sync")
    stack.wait_for(third, {"waiting"})
    page.wait_for_timeout(2000)  # more than a poll of the stream: a live page would count it
    assert banner.inner_text() == "2 new runs"
    page.click(".live-list .js-live-toggle")
    expect(banner).to_have_text("3 new runs", timeout=TIMEOUT)
    assert page.locator(".live-list .live-state").inner_text() == "following the list live"

    # The banner shows them: the list again, from the top.
    banner.click()
    expect(rows).to_have_count(4, timeout=TIMEOUT)
    assert not still_marked(page)
    assert banner.is_hidden()
    assert rows.first.locator(".badge").inner_text() == "waiting"


def test_the_runs_list_polls_when_its_stream_is_refused(
    page: Page, stack: Stack, watch: Watch
) -> None:
    automation(stack, "refused-stream", NAP)
    key = stack.new_key()
    watch.expect(r"^429 for GET .*/api/v1/runs/(stream|[0-9a-f-]+/events)")
    watch.expect(r"^console error on .*/ui/runs.*(429|EventSource)")
    # The key holds every stream it may (CONVEYOR_MAX_STREAMS_PER_KEY, 10 by default).
    with httpx.Client(timeout=WAIT) as client, ExitStack() as held:
        headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        for _ in range(10):
            response = held.enter_context(
                client.stream("GET", f"{stack.url}/api/v1/runs/stream", headers=headers)
            )
            assert response.status_code == 200
        sign_in(page, stack, key=key, start="/ui/runs?automation=refused-stream")
        state = page.locator(".live-list .live-state")
        expect(state).to_have_text(
            "live updates paused: the server refused the stream; checking every 5 s",
            timeout=TIMEOUT,
        )
        assert page.locator(".live-list").get_attribute("class") == "live live-list degraded"
        mark(page)
        run_id = trigger(stack, "refused-stream")
        expect(page.locator("button.new-runs")).to_have_text("1 new run", timeout=TIMEOUT)
        assert still_marked(page)
        shoot(page, "runs-live-polling")

        # The run page too: its history polled, the page redrawn when the run changed.
        stack.wait_for(run_id, {"waiting"})
        page.goto(f"{stack.url}/ui/runs/{run_id}")
        expect(page.locator(".live-state")).to_have_text(
            "live updates paused: the server refused the stream; checking every 5 s",
            timeout=TIMEOUT,
        )
        mark(page)
        stack.api("POST", f"/runs/{run_id}/cancel", {"reason": "polled"})
        expect(page.locator("#run-status")).to_have_text("cancelled", timeout=TIMEOUT)
        assert page.locator("table.history tbody tr code", has_text="run.cancelled").count() == 1
        assert still_marked(page)


def test_a_retry_with_an_edited_payload_and_the_latest_version(page: Page, stack: Stack) -> None:
    steps = [{"key": "greet", "type": "set", "vars": {"hello": "{{ trigger.payload.name }}"}}]
    automation(stack, "greeter", steps)
    run_id = trigger(stack, "greeter", {"name": "Ada"})
    stack.wait_for(run_id, {"completed"})
    v2 = [{**steps[0], "vars": {"hello": "v2 {{ trigger.payload.name }}"}}]
    stack.api("PUT", "/automations/greeter", {"name": "greeter", "steps": v2})

    sign_in(page, stack, start=f"/ui/runs/{run_id}")
    page.click("details.full-retry summary")
    form = page.locator("details.full-retry form")
    form.locator("input[name=reason]").fill("new name, new version")
    form.locator("textarea[name=payload]").fill('{"name": "Grace"}')
    form.locator("select[name=version]").select_option("latest")
    shoot(page, "run-retry-edited")
    form.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: "/ui/runs/" in url and run_id not in url)
    new_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#run-status")).to_have_text("completed", timeout=TIMEOUT)
    assert "v2" in page.locator("h1 .muted").inner_text()
    assert '"v2 Grace"' in page.locator("#step-greet pre.json").inner_text()
    new = stack.api("GET", f"/runs/{new_id}")
    assert new["retry_of"] == run_id
    assert new["version_number"] == 2
    assert new["trigger_event"]["payload"] == {"name": "Grace"}
    assert stack.api("GET", f"/runs/{run_id}")["version_number"] == 1
