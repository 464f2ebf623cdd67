"""Erasing a person from stored values: every occurrence of their values replaced. Pure.

A contact's *values* are their email, external id, the identity values their
events and runs named them by, and their push targets as shown. Erasure
replaces each occurrence of one, in any case, inside text and inside every
string (and object key) of a JSON value, with ``[erased]``; a JSON number
equal to one (an external id sent as a number) becomes the string ``[erased]``.

A value shorter than ``MIN_SUBSTRING`` characters (an external id such as
``42``) is replaced only where it stands alone (not between letters or
digits): replacing it inside every longer text would mangle times, ids and
counts that are not about the person.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ERASED = "[erased]"
MIN_SUBSTRING = 4


@dataclass(frozen=True)
class Eraser:
    """Replaces a person's values in texts and JSON values; counts nothing, says what changed."""

    values: tuple[str, ...]
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = []
        # Longest first, so a value inside another (a local part inside an email) never
        # leaves the rest of the longer one behind.
        for value in sorted(set(self.values), key=lambda v: (-len(v), v)):
            escaped = re.escape(value)
            if len(value) < MIN_SUBSTRING:
                escaped = rf"(?<![0-9A-Za-z]){escaped}(?![0-9A-Za-z])"
            parts.append(escaped)
        pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        object.__setattr__(self, "_pattern", pattern)

    @classmethod
    def of(cls, values: Iterable[str | None]) -> Eraser:
        """An eraser of the non-blank ``values`` (stripped)."""
        return cls(tuple(sorted({v.strip() for v in values if v and v.strip()})))

    def text(self, value: str) -> str:
        """``value`` with every occurrence replaced."""
        if self._pattern is None:
            return value
        return self._pattern.sub(ERASED, value)

    def found_in(self, value: str) -> bool:
        """True if ``value`` holds an occurrence."""
        return self._pattern is not None and self._pattern.search(value) is not None

    def json(self, value: Any) -> Any:
        """A JSON value (as ``json`` loads it) with every occurrence replaced, at any depth."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return ERASED if self._whole(str(value)) else value
        return value

    def json_text(self, value: str) -> str:
        """A text that may hold JSON (a stored response body): parsed and erased when it does.

        Parsing first catches values JSON escaped (``\\u00e9``, ``\\/``); a text
        that is not JSON is erased as text.
        """
        try:
            loaded = json.loads(value)
        except ValueError:
            return self.text(value)
        erased = self.json(loaded)
        if erased == loaded:
            return value
        return json.dumps(erased, ensure_ascii=False, separators=(",", ":"))

    def _whole(self, text: str) -> bool:
        return self._pattern is not None and self._pattern.fullmatch(text) is not None
