"""``conveyor.domain.erasure``: what an erasure replaces, and what it leaves."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor.domain.erasure import ERASED, Eraser

ERASER = Eraser.of(["ada@example.com", "cust-77", "42", None, "  ", "ada"])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("ada@example.com", ERASED, id="whole"),
        pytest.param("to ADA@Example.COM today", f"to {ERASED} today", id="any-case"),
        # The longest value first: the email goes whole, not its local part.
        pytest.param("ada@example.com/ada", f"{ERASED}/{ERASED}", id="longest-first"),
        pytest.param("order-cust-77-b", f"order-{ERASED}-b", id="inside-a-word"),
        # A value under 4 characters only where it stands alone.
        pytest.param("42", ERASED, id="short-alone"),
        pytest.param("id 42, n=420, t=2042-01-01", f"id {ERASED}, n=420, t=2042-01-01", id="short"),
        pytest.param("nothing here", "nothing here", id="untouched"),
    ],
)
def test_text(given: str, expected: str) -> None:
    assert ERASER.text(given) == expected
    assert ERASER.found_in(given) is (given != expected)


def test_json_at_any_depth_keys_and_numbers() -> None:
    value: Any = {
        "to": "Ada@example.com",
        "ada@example.com": {"list": ["x", 42, 420, 4.2, True, None, {"id": "cust-77"}]},
        "n": 7,
    }
    assert ERASER.json(value) == {
        "to": ERASED,
        ERASED: {"list": ["x", ERASED, 420, 4.2, True, None, {"id": ERASED}]},
        "n": 7,
    }


def test_json_text_parses_escapes_and_keeps_what_is_clean() -> None:
    body = json.dumps({"email": "ada@example.com", "note": "caf\u00e9"})  # ASCII-escaped
    assert json.loads(ERASER.json_text(body)) == {"email": ERASED, "note": "caf\u00e9"}
    escaped = '{"email": "ada\\u0040example.com"}'  # "@" escaped: invisible as text
    assert json.loads(ERASER.json_text(escaped)) == {"email": ERASED}
    clean = '{"a":  1}'
    assert ERASER.json_text(clean) is clean  # unchanged text stays byte for byte
    assert ERASER.json_text("not json: ada@example.com") == f"not json: {ERASED}"


def test_an_eraser_of_nothing_changes_nothing() -> None:
    empty = Eraser.of([None, ""])
    assert empty.text("ada@example.com") == "ada@example.com"
    assert empty.json({"a": [1, "x"]}) == {"a": [1, "x"]}
    assert not empty.found_in("anything")
