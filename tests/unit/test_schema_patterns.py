"""Patterns the OpenAPI schema states hold exactly what the server's own checks accept."""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.api.schemas.channels import PushSettingsPut
from conveyor.api.schemas.contacts import EMAIL_PATTERN, ContactUpsert
from conveyor.domain.contacts import InvalidIdentity, normalize_email

# Whitespace as Python trims it, plus characters other dialects call whitespace
# (U+FEFF, U+180E) or that are close to it, and ordinary characters around them.
_SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
_OTHERS = ["\ufeff", "\u180e", "\u200b", "\x00", "\x7f", "İ", "é", "+", ".", '"', "<"]


def _candidates() -> list[str]:
    out = ["a@b", "@b", "a@", "a@@b", "a@b@c", "ab", "", "Ada@Example.COM", "a.b+c@d.e"]
    for c in [*_SPACES, *_OTHERS, "@"]:
        out += [f"{c}a@b", f"a@b{c}", f"a{c}@b", f"a@{c}b", f"{c}{c}a@b{c}", f"a@{c}", f"{c}@b"]
    return out


def _server_accepts(value: str) -> bool:
    try:
        normalize_email(value)
    except InvalidIdentity:
        return False
    return True


def test_email_pattern_is_the_servers_rule() -> None:
    differ = [
        value
        for value in _candidates()
        if (re.fullmatch(EMAIL_PATTERN, value) is not None) != _server_accepts(value)
    ]
    assert differ == []


def test_email_pattern_means_the_same_in_every_dialect() -> None:
    # `\s`, `\w` and `\d` match different characters in Python, ECMA-262 (what JSON
    # Schema validators use) and Rust: the pattern spells its classes out.
    assert not re.search(r"\\[sSwWdD]", EMAIL_PATTERN)
    assert EMAIL_PATTERN.startswith("^")
    assert EMAIL_PATTERN.endswith("$")


def _property(model: Any, name: str) -> dict[str, Any]:
    prop: dict[str, Any] = model.model_json_schema(by_alias=True)["properties"][name]
    return next((branch for branch in prop.get("anyOf", [prop]) if "pattern" in branch), {})


def test_contact_email_states_the_pattern() -> None:
    assert _property(ContactUpsert, "email")["pattern"] == EMAIL_PATTERN


def test_an_email_the_pattern_refuses_is_refused_with_the_servers_message() -> None:
    with pytest.raises(ValidationError, match="is not an email address"):
        ContactUpsert(email="ada lovelace@example.com")


@pytest.mark.parametrize(
    "url",
    ["http://x", "https://x/y", "https://", "HTTPS://x", "ftp://x", "http:/x", " http://x", ""],
)
def test_webhook_url_pattern_is_the_servers_rule(url: str) -> None:
    pattern = _property(PushSettingsPut, "webhook_url")["pattern"]
    try:
        PushSettingsPut(webhook_url=url)
        accepted = True
    except ValidationError:
        accepted = False
    assert (re.search(pattern, url) is not None) == accepted
