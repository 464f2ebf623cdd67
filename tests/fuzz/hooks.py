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
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import schemathesis

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
