"""What the HTTP commands share: the server and key options, the client, paging, JSON input.

The URL and the key come from ``--url`` / ``--api-key``, else ``CONVEYOR_URL``
/ ``CONVEYOR_API_KEY``, else the configuration file (``conveyor login``,
``conveyor dev``), else the URL defaults to the local dev server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from conveyor.cli.common import fail, load_json
from conveyor.cli.config import read_config
from conveyor.cli.output import OutputFormat, emit_page, to_json

DEFAULT_URL = "http://127.0.0.1:8000"
_NO_KEY = (
    "an API key is required: pass --api-key, set CONVEYOR_API_KEY, "
    "or save one with `conveyor login` (`conveyor dev` saves its own)"
)


def opt(name: str, env: str, help_: str, *, short: str | None = None, **kw: Any) -> Any:
    """An option (``--name``, and ``short`` if given) that also reads ``env``, shown in help."""
    names = (name, short) if short else (name,)
    return typer.Option(*names, envvar=env, show_envvar=True, help=help_, **kw)


Url = Annotated[
    str | None,
    opt(
        "--url",
        "CONVEYOR_URL",
        f"base URL of the Conveyor server [default: the config file's, else {DEFAULT_URL}]",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    opt("--api-key", "CONVEYOR_API_KEY", "API key [default: the config file's]"),
]
Limit = Annotated[int, opt("--limit", "CONVEYOR_LIMIT", "page size (1-1000)", min=1, max=1000)]
Cursor = Annotated[
    str | None, opt("--cursor", "CONVEYOR_CURSOR", "continue after this page cursor")
]
AllPages = Annotated[bool, opt("--all", "CONVEYOR_ALL", "follow the cursor through every page")]


def base_url(url: str) -> str:
    """The server's base URL: without a trailing ``/`` or ``/api/v1`` (the CLI adds it)."""
    if not url.startswith(("http://", "https://")):
        raise fail(f"{url!r} is not a server URL: write http://host:port or https://host", 2)
    return url.rstrip("/").removesuffix("/api/v1")


class Api:
    """A small HTTP client for ``/api/v1`` that turns problems into CLI failures."""

    def __init__(self, url: str | None, api_key: str | None) -> None:
        saved = read_config() if url is None or not api_key else {}
        api_key = api_key or saved.get("api_key")
        if not api_key:
            raise fail(_NO_KEY)
        self.url = base_url(url or saved.get("url") or DEFAULT_URL)
        self.client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "conveyor-cli"},
            timeout=httpx.Timeout(30.0, read=None),
        )

    def send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The answer to a request, whatever its status (failing if there is none)."""
        try:
            return self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach {self.url}: {exc}") from None

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The answer to a request; failing with the problem on an error status."""
        response = self.send(method, path, **kw)
        self.check(response)
        return response

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """The JSON of the answer (None for 204)."""
        response = self.request(method, path, **kw)
        return None if response.status_code == 204 else response.json()

    def check(self, response: httpx.Response) -> None:
        """Fail with the problem's detail (and each invalid input) on an error status."""
        if not response.is_error:
            return
        response.read()
        try:
            problem = response.json()
            detail = str(problem.get("detail") or problem)
            errors = problem.get("errors") or []
        except (ValueError, AttributeError):
            problem, detail, errors = {}, response.text or response.reason_phrase, []
        code = problem.get("code") if isinstance(problem, dict) else None
        lines = [f"{detail} ({response.status_code}{', ' + code if code else ''})"]
        lines += [f"  {'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in errors]
        if response.status_code == 401:
            lines.append(f"  (the server at {self.url} did not accept the API key)")
        raise fail("\n".join(lines))

    def pages(
        self, path: str, params: Sequence[tuple[str, str]], cursor: str | None, all_pages: bool
    ) -> Iterator[dict[str, Any]]:
        """The page at ``cursor`` (the first if None), then, with ``all_pages``, every next one."""
        while True:
            page: dict[str, Any] = self.call(
                "GET", path, params=[*params, *([("cursor", cursor)] if cursor else [])]
            )
            yield page
            cursor = page.get("next_cursor")
            if not all_pages or not cursor:
                return


@contextmanager
def connect(url: str | None, api_key: str | None) -> Iterator[Api]:
    """An ``Api`` for the block, closed after it."""
    api = Api(url, api_key)
    try:
        yield api
    finally:
        api.client.close()


def list_command(
    api: Api,
    path: str,
    params: Sequence[tuple[str, str]],
    *,
    limit: int,
    cursor: str | None,
    all_pages: bool,
    output: OutputFormat,
    columns: Sequence[str],
    noun: str,
) -> None:
    """Print one page of a list (or every page, with ``all_pages``) in ``output``.

    JSON is the API's page; with ``--all``, one page holding every item
    (``next_cursor`` null). JSON lines are printed as pages arrive.
    """
    items: list[Any] = []
    last: dict[str, Any] = {}
    for page in api.pages(path, [*params, ("limit", str(limit))], cursor, all_pages):
        if output is OutputFormat.JSONL:
            for item in page["items"]:
                typer.echo(to_json(item))
        items += page["items"]
        last = page
    if output is OutputFormat.JSONL:
        return
    if all_pages:
        last = {**last, "items": items, "offset": 0, "next_cursor": None}
    emit_page(last, output, columns, noun)


def params_of(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query parameters for the values given (None left out, lists repeated)."""
    out: list[tuple[str, str]] = []
    for name, value in values.items():
        if value is None:
            continue
        for one in value if isinstance(value, list | tuple) else [value]:
            out.append((name, str(one).lower() if isinstance(one, bool) else str(one)))
    return out


def read_text(source: str, what: str) -> str:
    """The text of ``@FILE`` (``@-``: stdin) or ``source`` itself."""
    if not source.startswith("@"):
        return source
    name = source[1:]
    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"{what}: cannot read {name}: {exc.strerror}") from None


def json_argument(source: str, what: str) -> Any:
    """JSON given inline or as ``@FILE`` (``@-``: stdin), refused as the API refuses it."""
    text = read_text(source, what)
    try:
        return load_json(text, f"{what} holds what the API refuses")
    except ValueError as exc:
        raise fail(f"{what} is not valid JSON: {exc}") from None


def json_object(source: str, what: str) -> dict[str, Any]:
    """``json_argument`` that must be an object."""
    value = json_argument(source, what)
    if not isinstance(value, dict):
        raise fail(f"{what} must be a JSON object")
    return value
