"""Schemathesis hooks for the fuzz run (loaded with ``SCHEMATHESIS_HOOKS=tests.fuzz.hooks``).

They keep the fuzzer from testing itself rather than the server; neither
hides a server answer:

- **A fresh Idempotency-Key per request.** Hypothesis draws the same small
  values again and again (``"0"``), so two different requests would share a
  key and the second would get 422 ``idempotency_key_reused``, which is the
  contract (docs/api.md), not a bug. A key the schema allows (1 to 255
  characters) is replaced by a new UUID; a key outside it is sent as drawn,
  so its refusal is still tested. Replays are covered by tests/api/test_idempotency.py.
- **The fuzzer's own key stays alive.** A key may revoke itself, and the
  stateful phase follows ``GET /keys`` to ``DELETE /keys/{key_id}``; after
  that every request would be a 401, which the checks accept, and the rest of
  the run would test nothing. ``DELETE /api/v1/keys/{key_id}`` naming the key
  in ``CONVEYOR_FUZZ_KEY_ID`` is sent for a random id instead (a 404). The
  test also checks at the end that the key still works.

One hook drops failures, and only these: a **schema-valid request refused for
a rule no JSON schema can state** (ST202 with a 422 whose every `errors[].type`
is one of ``CROSS_FIELD_RULES``). Each rule is stated in the operation's
description in the OpenAPI document and in docs/api.md; each is a check on a
relation between values, or on what exists, never on a value's own shape. A
422 for anything else (a shape the schema allows, an unlisted type) is kept.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import schemathesis

# The 422 `errors[].type`s of rules across values or against stored state.
CROSS_FIELD_RULES = frozenset(
    {
        # Opaque cursors: only the server's own `next_cursor` is one; with one, no offset.
        "invalid_cursor",
        "cursor_with_offset",
        # A stream's `Last-Event-ID`, in the same way: only an `id` the stream sent.
        "invalid_event_id",
        # An operator's choice: the push provider `apprise` with no scheme allowed.
        "apprise_unavailable",
        # A sender mailbox (`Name <address>` or an address): RFC 5322, not a pattern.
        "invalid_mailbox",
        # A day the month does not have (2026-02-30); a range that ends before it starts.
        "invalid_day",
        "empty_range",
        # Either of two optional fields is required.
        "contact_key_missing",
        "template_body_missing",
        # The header and the body name different idempotency keys.
        "idempotency_key_mismatch",
        # A key's expiry must be after now.
        "expires_in_past",
        # A tenant's own SMTP server needs its host (settings used whole or not at all).
        "incomplete_channel",
        # A definition's references, graph and sources: steps it names must exist,
        # cycles are refused, and expressions, templates, cron and time zones must
        # compile (a schema can only say they are strings).
        "unknown_dependency",
        "unknown_branch",
        "dependency_cycle",
        "duplicate_key",
        "bad_expression",
        "bad_template",
        "bad_cron",
        "bad_timezone",
        "name_is_id",
        "egress_denied",
        # A step type's own rules beyond each setting's shape (exactly one of
        # `duration` or `until`, `json` or `body`, an email address in `to`),
        # stated in the settings' descriptions; a trigger type's required field.
        "invalid_setting",
        "incomplete_trigger",
        # A trigger's dry-run fields only with `dry_run: true`, its run fields only without.
        "dry_run_fields",
        # A dry run's rules against its automation and stored state: a time zone
        # that exists, a version and contacts that exist, dates in order and at
        # most CONVEYOR_DRY_RUN_MAX_DAYS apart, `profile_ids` for a manual trigger.
        "invalid_dry_run",
        # An automation's concurrency key expression, evaluated over the trigger
        # (`identity.value` with no identity given).
        "invalid_concurrency_key",
        # A retry's mode and its fields: `from_step` needs a `step_key` of the run,
        # `payload` goes with `full` only.
        "invalid_retry",
        # A bulk cancel's or replay's statuses must include one it can act on.
        "invalid_bulk_filters",
    }
)

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Give each request its own Idempotency-Key; never revoke the fuzzer's key."""
    headers = case.headers or {}
    for name in list(headers):
        value = headers[name]
        if (
            name.lower() == IDEMPOTENCY_HEADER
            and isinstance(value, str)
            and 1 <= len(value) <= MAX_KEY_LENGTH
        ):
            headers[name] = uuid.uuid4().hex
    own_key = os.environ.get("CONVEYOR_FUZZ_KEY_ID")
    if (
        own_key
        and case.method.upper() == "DELETE"
        and case.path == "/api/v1/keys/{key_id}"
        and str(case.path_parameters.get("key_id", "")).strip().lower() == own_key
    ):
        case.path_parameters["key_id"] = str(uuid.uuid4())


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a 422 for a rule across values (see the module's docstring)."""
    if getattr(failure, "code", None) != "ST202" or response.status_code != 422:
        return True
    try:
        errors = json.loads(response.content).get("errors") or []
    except (ValueError, AttributeError):
        return True
    kinds = {e.get("type") for e in errors if isinstance(e, dict)}
    return not kinds or not kinds <= CROSS_FIELD_RULES
