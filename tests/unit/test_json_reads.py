"""The store's JSON reader (``conveyor.store.types.loads``) reads what ``json.loads`` reads.

It is the engines' JSON deserializer on both databases, a faster parser with
``json.loads`` behind it for whatever that parser refuses: the decoded value
must be the same in every case, including rows older versions stored.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from conveyor.store.types import loads

TEXTS = {
    "identity": '{"type": "email", "value": "ada@x.org"}',
    "error": '{"code": "boom", "details": [1, null, true, 2.5], "message": "it broke"}',
    "compact": '{"a":{"b":[{"c":"d"}]}}',
    "empty": "{}",
    "scalar": '"text"',
    "escapes": r'"tab\tquote\" \u00e9 \ud83d\ude00 \u0000"',
    "big-int": "123456789012345678901234567890",
    "minus-zero": "[-0, -0.0]",
    "floats": "[0.1, 1e2, 1E-7, 5e-324, 1.7976931348623157e308, 9007199254740993.0]",
    "overflow": "[1e400, -1e400, 1e-400]",
    "nan": "[NaN, Infinity, -Infinity]",
    "duplicate-keys": '{"a": 1, "b": 2, "a": 3}',
    "unicode": '{"naïve": "日本"}',
    # refused by the fast parser, read by json.loads (older SQLite rows)
    "lone-surrogate": r'{"x": "\ud800"}',
    "lone-trailing-surrogate": r'"\udc00x"',
    "deep": "[" * 300 + "]" * 300,
}


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or repr(a) == repr(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_loads_reads_what_json_loads_reads(text: str, as_bytes: bool) -> None:
    raw = text.encode("utf-8", "surrogatepass") if as_bytes else text
    assert _same(loads(raw), json.loads(raw))


@pytest.mark.parametrize("text", ['{"a": 1', "", "[1,]", "nul", '"\x01"'])
def test_loads_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):  # json.loads's own refusal
        loads(text)


def test_floats_are_read_to_the_same_double() -> None:
    rnd = random.Random(7)
    values = [rnd.uniform(-1e6, 1e6) for _ in range(2000)]
    values += [rnd.random() * 10.0 ** rnd.randint(-300, 300) for _ in range(2000)]
    for x in values:
        for text in (repr(x), f"{x:.17e}", f"{x:.25g}"):
            assert loads(text) == json.loads(text), text
