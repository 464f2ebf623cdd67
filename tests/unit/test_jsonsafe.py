"""``conveyor.domain.jsonsafe``: finding, naming and replacing what JSON must not hold."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from conveyor.domain import jsonsafe
from conveyor.domain.jsonsafe import MAX_DEPTH, TOO_DEEP, Kind


def nest(levels: int, key: str | None = None) -> Any:
    """``levels`` containers one inside the other: objects ``{key: ...}`` or arrays."""
    value: Any = {} if key is not None else []
    for _ in range(levels - 1):
        value = {key: value} if key is not None else [value]
    return value


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize(
    ("value", "kind", "pointer"),
    [
        pytest.param({"a": [1, {"b": math.nan}]}, Kind.NON_FINITE, "/a/1/b", id="nan"),
        pytest.param([math.inf], Kind.NON_FINITE, "/0", id="infinity"),
        pytest.param({"x": -math.inf}, Kind.NON_FINITE, "/x", id="minus-infinity"),
        pytest.param(
            {"items": [0, 1, 2, {"name": "a\ud800"}]},
            Kind.LONE_SURROGATE,
            "/items/3/name",
            id="surrogate-in-value",
        ),
        pytest.param({"a": {"k\udfff": 1}}, Kind.LONE_SURROGATE, "/a/k\ufffd", id="surrogate-key"),
        pytest.param("\udc00", Kind.LONE_SURROGATE, "", id="surrogate-at-the-top"),
        pytest.param({"a": ["ok", "x\x00y"]}, Kind.NUL, "/a/1", id="nul-in-value"),
        pytest.param({"a": {"k\x00": 1}}, Kind.NUL, "/a/k\ufffd", id="nul-in-key"),
        pytest.param({"a/b": {"c~d": [math.nan]}}, Kind.NON_FINITE, "/a~1b/c~0d/0", id="escaped"),
        pytest.param(nest(MAX_DEPTH + 1), Kind.TOO_DEEP, "/0" * MAX_DEPTH, id="depth-65"),
        pytest.param(
            {"payload": nest(300, "a")},
            Kind.TOO_DEEP,
            "/payload" + "/a" * (MAX_DEPTH - 1),  # the body is depth 1, `payload` 2
            id="depth-300",
        ),
    ],
)
def test_the_first_flaw_is_named_with_its_pointer(value: Any, kind: Kind, pointer: str) -> None:
    flaw = jsonsafe.find_flaw(value)
    assert flaw is not None
    assert flaw.kind is kind
    assert flaw.pointer == pointer
    assert flaw.message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": [1, 2.5, "é", "😀", None, True]}, id="plain"),
        pytest.param(nest(MAX_DEPTH), id="depth-64"),
        pytest.param("😀 \ufffd", id="paired-surrogates-and-replacement-char"),
        pytest.param(10**40, id="big-integer"),
    ],
)
def test_clean_values_have_no_flaw(value: Any) -> None:
    assert jsonsafe.find_flaw(value) is None
    assert jsonsafe.sanitize(value) == (value, [])


def test_the_first_flaw_in_document_order_wins() -> None:
    flaw = jsonsafe.find_flaw({"a": 1, "b": ["\ud800"], "c": math.nan})
    assert flaw is not None
    assert (flaw.kind, flaw.pointer) == (Kind.LONE_SURROGATE, "/b/0")


def test_sanitize_replaces_every_flaw() -> None:
    value = {
        "text": "x\ud800y",
        "k\udc00": [math.nan, math.inf, 1.5],
        "deep": nest(300),
        "fine": {"a": "é"},
    }
    clean, flaws = jsonsafe.sanitize(value)
    assert clean["text"] == "x\ufffdy"
    assert clean["k\ufffd"] == [None, None, 1.5]
    assert clean["fine"] == {"a": "é"}
    assert depth(clean) == MAX_DEPTH
    assert TOO_DEEP in json.dumps(clean["deep"])
    kinds = sorted(f.kind for f in flaws)
    assert kinds == sorted([Kind.LONE_SURROGATE] * 2 + [Kind.NON_FINITE] * 2 + [Kind.TOO_DEEP])
    json.dumps(clean, allow_nan=False).encode("utf-8")  # now any encoder takes it


@pytest.mark.parametrize(
    ("text", "suspect"),
    [
        ('{"a": [1, 2.5, "é"]}', False),
        ('{"a": NaN}', True),
        ('{"a": -Infinity}', True),
        ('{"a": 1e999}', True),
        ('{"a": "\\ud800"}', True),
        ('{"a": "\\ud83d\\ude00"}', True),  # a pair: only a closer look, no flaw
        ("[" * 65 + "]" * 65, True),
        ('{"a": "NaN in a string"}', False),  # parsed, not a number: no flaw
        ('{"a": "\\u0000"}', True),
        ('{"a": "\\\\u0000 written out"}', True),  # an escaped backslash: a look, no flaw
    ],
)
def test_loads_says_when_a_closer_look_is_needed(text: str, suspect: bool) -> None:
    parsed = jsonsafe.loads(text.encode())
    assert parsed.suspect is suspect
    if not suspect:
        assert jsonsafe.find_flaw(parsed.value) is None


def test_loads_reads_raw_surrogate_bytes_as_json_does() -> None:
    # CESU-8 style bytes: json.loads decodes them with "surrogatepass".
    parsed = jsonsafe.loads(b'{"a": "\xed\xa0\x80"}')
    assert parsed.suspect
    flaw = jsonsafe.find_flaw(parsed.value)
    assert flaw is not None
    assert flaw.pointer == "/a"


def test_text_too_deep_for_json_is_named_and_cut() -> None:
    text = '{"a": [1, {"b": ' + "[" * 3000 + "]" * 3000 + '}], "c": "\\ud800"}'
    with pytest.raises(jsonsafe.TooDeepToParse) as caught:
        jsonsafe.loads(text)
    # {} is depth 1, a 2, a/1 3, a/1/b 4: the 65th container is 61 arrays further in.
    assert caught.value.flaw.pointer == "/a/1/b" + "/0" * (MAX_DEPTH - 3)

    cut, cuts = jsonsafe.cut_too_deep(text)
    assert cuts == 1
    value = json.loads(cut)
    assert depth(value) == MAX_DEPTH

    clean, flaws = jsonsafe.loads_sanitized(text)
    assert clean["c"] == "\ufffd"
    assert depth(clean) == MAX_DEPTH
    assert sorted(f.kind for f in flaws) == [Kind.LONE_SURROGATE, Kind.TOO_DEEP]


def test_the_scanner_skips_brackets_inside_strings() -> None:
    text = json.dumps({"s": "[[[{{{", "k]": [nest(70)]})
    assert jsonsafe.deep_path(text) == ("k]", 0) + (0,) * (MAX_DEPTH - 2)
    assert jsonsafe.deep_path(json.dumps({"s": "[" * 100})) is None


@pytest.mark.parametrize(
    ("text", "flawed"),
    [
        ('{"a": 1}', False),
        ('{"a": NaN}', True),
        ('{"a": Infinity}', True),
        ('{"a": "\\udfff"}', True),
        ('{"a": "\\u0000"}', True),
        ("[" * 70 + "]" * 70, True),
    ],
)
def test_stored_text_is_scanned_before_it_is_parsed(text: str, flawed: bool) -> None:
    assert jsonsafe.text_may_have_flaws(text) is flawed


def test_a_kind_the_text_rules_out_is_not_looked_for() -> None:
    # 71 brackets: only the depth is in question, and it is fine.
    parsed = jsonsafe.loads(json.dumps([[1.5, "é"]] * 70))
    assert parsed.suspicion == jsonsafe.Suspicion(
        non_finite=False, surrogates=False, deep=True, max_depth=MAX_DEPTH
    )
    assert parsed.flaw() is None
    deep = jsonsafe.loads(json.dumps({"x": [nest(70)] * 2}))
    flaw = deep.flaw()
    assert flaw is not None
    assert flaw.pointer == "/x/0" + "/0" * (MAX_DEPTH - 2)
    # A part of the document is checked on its own, from depth 1.
    assert deep.suspicion.find(nest(MAX_DEPTH)) is None
    assert jsonsafe.loads('{"a": 1}').flaw() is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": [1, 2.5, "é", None, True]}, id="plain"),
        pytest.param({"a": "😀", "b": "\\ud800 written out"}, id="paired-surrogates"),
        pytest.param({"a": "\\u0000 written out"}, id="an-escaped-backslash-before-u0000"),
        pytest.param([[1, 2]] * 70, id="many-brackets-shallow"),
        pytest.param(nest(MAX_DEPTH), id="depth-64"),
        pytest.param("x", id="a-string"),
        pytest.param(None, id="null"),
    ],
)
def test_encode_keeps_a_clean_value_as_it_is(value: Any) -> None:
    encoded = jsonsafe.encode(value)
    assert encoded.value is value
    assert encoded.flaws == ()
    assert json.loads(encoded.text) == value
    assert encoded.text.isascii()  # its length is its size in bytes


def test_encode_replaces_what_sanitize_replaces() -> None:
    value = {
        "text": "x\ud800y",
        "k\udc00": (math.nan, -math.inf, 1.5),  # a tuple, as an expression builds
        "deep": nest(300),
        "deeper": nest(5000),  # past what json can encode
        "fine": {"a": "é"},
    }
    encoded = jsonsafe.encode(value)
    assert encoded.value["text"] == "x\ufffdy"
    assert encoded.value["k\ufffd"] == [None, None, 1.5]
    assert encoded.value["fine"] == {"a": "é"}
    assert depth(encoded.value) == MAX_DEPTH
    assert json.loads(encoded.text) == encoded.value
    assert sorted(f.kind for f in encoded.flaws) == sorted(
        [Kind.LONE_SURROGATE] * 2 + [Kind.NON_FINITE] * 2 + [Kind.TOO_DEEP] * 2
    )
    assert jsonsafe.summary(encoded.flaws, limit=2) == (
        "lone_surrogate at /text, lone_surrogate at /k\ufffd and 4 more"
    )


def test_encode_cuts_a_cycle_and_refuses_what_json_cannot_hold() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    encoded = jsonsafe.encode(cycle)
    assert depth(encoded.value) == MAX_DEPTH
    assert [f.kind for f in encoded.flaws] == [Kind.TOO_DEEP]
    keyed = jsonsafe.encode({math.nan: 1})  # an expression can build that key
    assert (keyed.text, [f.kind for f in keyed.flaws]) == ('{"null":1}', [Kind.NON_FINITE])
    with pytest.raises(TypeError):
        jsonsafe.encode({"when": object()})


def test_encode_works_without_the_c_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    value = {"a": [1, "é"], "b": math.nan, "c": "\ud800"}
    fast = jsonsafe.encode(value)
    monkeypatch.setattr(jsonsafe, "_STRICT_C", None)
    assert jsonsafe.encode(value) == fast
    assert fast.text == '{"a":[1,"\\u00e9"],"b":null,"c":"\\ufffd"}'


def test_nul_is_a_flaw_replaced_like_a_lone_surrogate() -> None:
    # PostgreSQL keeps U+0000 neither in text nor in jsonb (the escape \u0000).
    value = {"text": "a\x00b", "k\x00": ["\x00"], "fine": "é"}
    clean, flaws = jsonsafe.sanitize(value)
    assert clean == {"text": "a\ufffdb", "k\ufffd": ["\ufffd"], "fine": "é"}
    assert [(f.kind, f.pointer) for f in flaws] == [
        (Kind.NUL, "/text"),
        (Kind.NUL, "/k\ufffd"),
        (Kind.NUL, "/k\ufffd/0"),
    ]
    encoded = jsonsafe.encode(value)
    assert encoded.value == clean
    assert "\\u0000" not in encoded.text
    assert len(encoded.flaws) == 3
    assert jsonsafe.clean_text("a\x00b\ud800") == "a\ufffdb\ufffd"
    parsed = jsonsafe.loads(b'{"a": "x\\u0000"}')
    flaw = parsed.flaw()
    assert flaw is not None
    assert (flaw.kind, flaw.pointer) == (Kind.NUL, "/a")
    assert "U+0000" in flaw.message
