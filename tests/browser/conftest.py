"""Browser tests: Debian's Chromium, driven by Playwright, against a live server and worker.

``make test`` installs the ``chromium`` package when ``/usr/bin/chromium`` is
missing (``make chromium``); without it these tests fail naming the command
to run, they are never skipped. Playwright's own browser downloads are not
used (``playwright install`` needs a CDN this project does not rely on).

Every page a test opens is watched: a console error, an uncaught exception,
a failed request or an answer of 400 or more fails the test unless the test
said it expects it (an EventSource aborted when the page closes it or leaves
is how a stream stops, and the icon's request cut short by leaving a page is the
browser's own: neither is a failure). Screenshots (1280x800) go to ``tmp/artifacts/browser/``
in the checkout (``CONVEYOR_ARTIFACTS`` overrides the directory).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.clock import SystemClock
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as key_service
from conveyor.store.db import Database
from tests.api.live import served_with_worker
from tests.support.http_server import LOCAL, HitServer, running_server

CHROMIUM = Path(os.environ.get("CONVEYOR_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CONVEYOR_ARTIFACTS", ROOT / "tmp" / "artifacts" / "browser"))
VIEWPORT = {"width": 1280, "height": 800}
WAIT = 30.0  # seconds: only catches a hang (a run that never finishes)

try:
    from playwright.sync_api import (
        Browser,
        ConsoleMessage,
        Page,
        Request,
        Response,
        sync_playwright,
    )
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise RuntimeError(
        "the browser tests need Playwright: `make venv` (it is in the dev extra)"
    ) from exc


@dataclass
class Stack:
    """A live server and worker on a SQLite file, a tenant with an all-scopes key."""

    db: Database
    url: str
    key: str
    tenant: str
    http: HitServer

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """The API's answer (JSON), as a client with the key would get it."""
        headers = {"Authorization": f"Bearer {token or self.key}"}
        response = httpx.request(
            method, f"{self.url}/api/v1{path}", json=body, headers=headers, timeout=60.0
        )
        assert response.is_success, response.text
        return response.json() if response.content else None

    def new_key(self, scopes: Any = ALL_SCOPES) -> str:
        """Another key of the tenant."""
        with self.db.transaction() as conn:
            _, token = key_service.create_key(
                conn, tenant_id=self.tenant, scopes=scopes, label="browser", now=SystemClock().now()
            )
        return token

    def wait_for(self, run_id: str, statuses: set[str]) -> dict[str, Any]:
        """The run once it reaches one of ``statuses``."""
        deadline = time.monotonic() + WAIT
        while True:
            run: dict[str, Any] = self.api("GET", f"/runs/{run_id}")
            if run["status"] in statuses:
                return run
            assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One server and worker per module (SQLite: the pages are the subject, not the store)."""
    folder = tmp_path_factory.mktemp("browser")
    with (
        running_server() as http,
        served_with_worker(sqlite_template, folder, "browser", egress_allow=LOCAL) as live,
    ):
        yield Stack(live.db, live.url, live.key, live.tenant, http)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, with nothing that calls out on its own."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: run `make chromium` "
            "(or, as root, `apt-get update && apt-get install -y chromium`)"
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watch:
    """What went wrong on the pages of one test: console errors, exceptions, failed loads."""

    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    expected: list[Callable[[str], bool]] = field(default_factory=list)

    def expect(self, pattern: str) -> None:
        """A problem matching ``pattern`` (a regular expression) is what the test wants to see."""
        self.expected.append(lambda text: re.search(pattern, text) is not None)

    def note(self, text: str) -> None:
        if not any(ok(text) for ok in self.expected):
            self.problems.append(text)

    def attach(self, page: Page) -> None:
        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.note(f"console error on {page.url}: {message.text}")

        def failed(request: Request) -> None:
            # A live stream ends aborted when the page closes it (Pause, the run ended)
            # or leaves: that is how an EventSource stops, not a failure.
            if request.resource_type == "eventsource" and request.failure == "net::ERR_ABORTED":
                return
            # Leaving a page at once can abort the icon it was still fetching: the
            # browser's own request, cut short by the navigation, not a failure
            # (seen in a clean-clone run of test_a_run_links_the_runs_it_started).
            if request.url.endswith("/ui/static/favicon.svg") and request.failure == (
                "net::ERR_ABORTED"
            ):
                return
            self.note(f"request failed: {request.method} {request.url}: {request.failure}")

        def answered(response: Response) -> None:
            if response.status >= 400:
                self.note(f"{response.status} for {response.request.method} {response.url}")

        def dialog(d: Any) -> None:
            # Every dialog is recorded; a confirmation (the page asking) is accepted.
            self.dialogs.append(f"{d.type}: {d.message}")
            if d.type == "confirm":
                d.accept()
            else:
                d.dismiss()

        page.on("console", console)
        page.on("pageerror", lambda exc: self.note(f"uncaught exception on {page.url}: {exc}"))
        page.on("requestfailed", failed)
        page.on("response", answered)
        page.on("dialog", dialog)


@pytest.fixture
def watch() -> Watch:
    """The test's watcher; checked when the test ends."""
    return Watch()


@pytest.fixture
def page(browser: Browser, watch: Watch) -> Iterator[Page]:
    """A fresh 1280x800 browser context and page, watched; problems fail the test at the end."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(WAIT * 1000)
    opened = context.new_page()
    watch.attach(opened)
    try:
        yield opened
    finally:
        context.close()
    assert watch.problems == [], "\n".join(watch.problems)


def shoot(page: Page, name: str) -> Path:
    """Save a 1280x800 screenshot of the page as ``ARTIFACTS/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def sign_in(page: Page, stack: Stack, key: str | None = None, start: str = "/") -> None:
    """Open ``start`` and sign in on the login page it leads to."""
    page.goto(stack.url + start)
    page.wait_for_url(re.compile(r"/ui/login"))
    page.fill("#api_key", key or stack.key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/(?!login)"))
