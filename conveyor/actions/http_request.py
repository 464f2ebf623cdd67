"""``http_request``: call an HTTP endpoint through the egress client (``conveyor.net.http``).

The URL is a tenant's (or a payload's), so the egress policy checks where it
leads; the answer is read whole under the byte cap and the total deadline.
Error texts and dry runs show the URL as ``scheme://host/path``: its userinfo
and query often hold credentials, and step errors are read by any
``runs:read`` key.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from conveyor.actions.base import ActionContext, ActionResult, StepError
from conveyor.domain import jsonsafe
from conveyor.domain.redact import Scrubber, shown_url
from conveyor.domain.wire_types import Integer
from conveyor.net.egress import Denied, EgressError
from conveyor.net.http import DeadlinePassed, EgressClient, Fetched, ResponseTooLarge

# Client errors that a later attempt can fix; other 4xx answers are final.
_RETRYABLE_4XX = frozenset({408, 425, 429})


class HttpRequestSettings(BaseModel):
    """Settings of `http_request`: one request per attempt.

    The step's common `timeout` is the call's whole deadline, up to
    `CONVEYOR_HTTP_MAX_TIMEOUT` (300 s by default; without one:
    `CONVEYOR_HTTP_TIMEOUT`, 30 s). Redirects are not followed; the answer is
    read up to `CONVEYOR_HTTP_MAX_RESPONSE_BYTES` after decompression (by
    default `CONVEYOR_MAX_OUTPUT_BYTES`, 1 MiB). The output is
    `{status, headers, json}` for a JSON answer, else `{status, headers, text}`.
    """

    model_config = ConfigDict(extra="forbid")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = Field(
        "GET", description="the HTTP method"
    )
    url: str = Field(
        min_length=1,
        json_schema_extra={"pattern": "^https?://"},
        description="an `http://` or `https://` URL. A literal private address, a `localhost` "
        "name or a host the server denies is refused when the automation is saved (422 "
        "`egress_denied`); a host name is checked on what it resolves to before connecting",
        examples=["https://crm.example/hooks/orders"],
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="request headers, names to string values"
    )
    json_body: Any = Field(
        None,
        alias="json",
        description="a JSON value sent as the body (`Content-Type: application/json`); not "
        "with `body`",
    )
    body: str | None = Field(None, description="a text body sent as it is; not with `json`")
    expect_status: list[Integer] | None = Field(
        None,
        description="the statuses that count as success; default any 2xx. Another fails the "
        "attempt (`unexpected_status`; retried for 5xx, 408, 425 and 429)",
    )

    @model_validator(mode="after")
    def _one_body(self) -> HttpRequestSettings:
        if self.json_body is not None and self.body is not None:
            raise PydanticCustomError("invalid_setting", "give `json` or `body`, not both")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("`url` must start with http:// or https://")
        return self

    def describe(self) -> dict[str, Any]:
        """The request as data (what a dry run reports)."""
        # Shown as texts show URLs: no userinfo or query (they hold credentials).
        out: dict[str, Any] = {
            "method": self.method,
            "url": shown_url(self.url),
            "headers": self.headers,
        }
        if self.json_body is not None:
            out["json"] = self.json_body
        if self.body is not None:
            out["body"] = self.body
        return out


def _expected(settings: HttpRequestSettings, status: int) -> bool:
    if settings.expect_status:
        return status in settings.expect_status
    return 200 <= status < 300


def _parse(response: Fetched) -> Any:
    try:
        return response.json()
    except RecursionError:
        # Nested deeper than json can follow: cut past jsonsafe.MAX_DEPTH first, as
        # the round would cut it anyway (it replaces the rest, and says so).
        return json.loads(jsonsafe.cut_too_deep(response.text)[0])


def _decode(response: Fetched) -> dict[str, Any]:
    out: dict[str, Any] = {"status": response.status_code, "headers": dict(response.headers)}
    if "json" in response.headers.get("content-type", ""):
        try:
            out["json"] = _parse(response)
            return out
        except ValueError:  # not JSON (or not in its encoding): kept as text
            pass
    out["text"] = response.text
    return out


async def _fetch(ctx: ActionContext, http: EgressClient, s: HttpRequestSettings) -> Fetched:
    # The step's own `timeout` bounds the call (up to CONVEYOR_HTTP_MAX_TIMEOUT);
    # without one, CONVEYOR_HTTP_TIMEOUT does.
    requested = ctx.step.timeout.total_seconds() if ctx.step.timeout else None
    scrub = Scrubber.for_url(s.url)
    where = f"{s.method} {shown_url(s.url)}"
    try:
        return await http.fetch(
            s.method,
            s.url,
            headers=s.headers,
            json=s.json_body,
            content=s.body,
            timeout=requested,
        )
    except Denied as exc:
        raise StepError(f"{where}: {exc}", code="egress_denied", retryable=False) from exc
    except ResponseTooLarge as exc:
        raise StepError(f"{where}: {exc}", code="response_too_large", retryable=False) from exc
    except DeadlinePassed as exc:
        if requested is not None and requested <= http.limits.max_timeout:
            # The step's own timeout ran out during the call: the step timed out,
            # exactly as if the worker's timer had gone off first.
            raise StepError(f"{where}: {exc}", code="step_timeout") from exc
        raise StepError(f"{where} timed out: {exc}", code="http_timeout") from exc
    except httpx.HTTPError as exc:
        raise StepError(f"{where} failed: {scrub(repr(exc))}", code="http_error") from exc
    except EgressError as exc:  # an answer we cannot decode
        raise StepError(f"{where} failed: {scrub(str(exc))}", code="http_error") from exc


class HttpRequestAction:
    """Make one HTTP request per attempt; an unexpected status fails the attempt."""

    step_type: ClassVar[str] = "http_request"
    settings_model: ClassVar[type[BaseModel]] = HttpRequestSettings
    branches: ClassVar[frozenset[str]] = frozenset()
    raw_fields: ClassVar[frozenset[str]] = frozenset()
    inline: ClassVar[bool] = False

    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Send the request and return status, headers and the parsed body."""
        s = ctx.settings
        assert isinstance(s, HttpRequestSettings)
        if not isinstance(ctx.http, EgressClient):
            # Only the egress client checks where a call goes: no other may make it.
            raise StepError("no egress HTTP client configured", retryable=False)
        response = await _fetch(ctx, ctx.http, s)
        out = _decode(response)
        if not _expected(s, response.status_code):
            status = response.status_code
            raise StepError(
                f"{s.method} {shown_url(s.url)} answered {status}",
                code="unexpected_status",
                retryable=status >= 500 or status in _RETRYABLE_4XX,
                details={"status": status, "body": out.get("json", out.get("text", ""))},
            )
        return ActionResult(output=out)

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """Never called: HTTP is not inline."""
        raise NotImplementedError("http_request is not an inline action")

    def simulate(self, ctx: ActionContext) -> ActionResult:
        """Report the request that would be made; make none."""
        assert isinstance(ctx.settings, HttpRequestSettings)
        return ActionResult(output={"would_request": ctx.settings.describe()})
