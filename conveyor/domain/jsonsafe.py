"""JSON hygiene: what is refused at the door, and what is replaced on the way out.

Python's ``json`` module accepts three things that break Conveyor later on:

- ``NaN``, ``Infinity`` and ``-Infinity`` (and numbers such as ``1e999``,
  which overflow to infinity): not JSON at all; other parsers refuse them and
  PostgreSQL's jsonb cannot hold them.
- lone surrogates (``"\\ud800"`` with no partner): valid JSON text, but no
  Unicode string, so they can be neither written as UTF-8 nor kept in jsonb.
- deep nesting: a recursive encoder gives up (Pydantic's at 255 levels,
  ``json`` at the interpreter's recursion limit), so a value that was stored
  could no longer be shown.

And one that is Unicode but that PostgreSQL keeps neither in text nor in
jsonb: U+0000 (NUL), which it refuses even in a comparison. It is treated
like a lone surrogate (the same walk over strings and keys finds both).

``loads`` parses and says cheaply whether a value needs a closer look;
``find_flaw`` names the first flaw (for a 400/422 with its place); ``sanitize``
replaces every flaw (for stored values: U+FFFD for a lone surrogate or NUL, null for
a non-finite number, ``"<removed: too deep>"`` for a sub-tree past
``MAX_DEPTH``). ``cut_too_deep`` does the last one on JSON text, for documents
too deep for ``json`` to parse at all. ``encode`` writes a value as JSON text
with the same replacements, for everything stored (cheap for a clean value).
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

# Deeper than any document a person writes, well short of where encoders give up.
MAX_DEPTH = 64
TOO_DEEP = "<removed: too deep>"
REPLACEMENT = "\ufffd"

Path = tuple[str | int, ...]

_SURROGATE = re.compile("[\ud800-\udfff]")
# A lone surrogate or NUL: what clean_text replaces.
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
# NUL as ``json`` writes it and reads it (a raw one is not JSON).
_NUL_ESCAPE = "\\u0000"
# A lone surrogate reaches a parsed string from an escape, or from raw bytes
# decoded with "surrogatepass" (as ``json`` decodes bytes). Paired escapes
# match too: they only cost a closer look.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# What a non-finite number looks like in JSON text written by Python (NaN,
# Infinity, -Infinity) or by hand (1e999: any exponent of three digits).
_NON_FINITE_TEXT = re.compile(r"NaN|Infinity|[eE][+-]?[0-9]{3}")
# JSON strings (unrolled, so long strings cost no backtracking) and structure.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')


class Kind(StrEnum):
    """What is wrong with a JSON value."""

    NON_FINITE = "non_finite"
    LONE_SURROGATE = "lone_surrogate"
    NUL = "nul_character"
    TOO_DEEP = "too_deep"


_MESSAGES = {
    Kind.NON_FINITE: "NaN and Infinity are not JSON numbers: send null, a number or a string",
    Kind.LONE_SURROGATE: (
        "a lone surrogate (an unpaired \\ud800-\\udfff escape, in a key or a string) "
        "is not Unicode text"
    ),
    Kind.NUL: "U+0000 (NUL) cannot be stored as text: remove it",
    Kind.TOO_DEEP: (
        f"nested deeper than {MAX_DEPTH} levels of objects and arrays: flatten the data"
    ),
}


@dataclass(frozen=True)
class Flaw:
    """One thing wrong in a JSON value, and where: the path of keys and indexes to it."""

    kind: Kind
    path: Path

    @property
    def pointer(self) -> str:
        """The place as a JSON pointer (RFC 6901); a surrogate or NUL in a key shows as U+FFFD."""
        return pointer(self.path)

    @property
    def message(self) -> str:
        """What is wrong, for people."""
        return _MESSAGES[self.kind]

    @property
    def loc(self) -> list[str | int]:
        """The path with surrogates and NUL in keys replaced, fit for an error's ``loc``."""
        return [clean_text(p) if isinstance(p, str) else p for p in self.path]


class TooDeepToParse(ValueError):
    """The text nests so deep that ``json`` ran out of recursion parsing it."""

    def __init__(self, path: Path) -> None:
        self.flaw = Flaw(Kind.TOO_DEEP, path)
        super().__init__(f"JSON nested too deep at {self.flaw.pointer or '/'}")


def pointer(path: Path) -> str:
    """``path`` as a JSON pointer: ``("a", 3, "b/c")`` is ``/a/3/b~1c``."""
    parts = (clean_text(str(p)).replace("~", "~0").replace("/", "~1") for p in path)
    return "".join("/" + p for p in parts)


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate and each NUL replaced by U+FFFD."""
    if text.isascii() and "\x00" not in text:
        return text
    return _BAD_CHAR.sub(REPLACEMENT, text)


@dataclass(frozen=True)
class Suspicion:
    """Which flaws a parsed document may have, as a scan of its text found.

    A kind not suspected is certainly absent, so ``find`` looks only for the
    others: most documents need no walk at all, and a large one (an event
    batch has more brackets than ``MAX_DEPTH``) only a walk over its
    containers.
    """

    non_finite: bool = True
    surrogates: bool = True  # lone surrogates or NUL: both are looked for in strings and keys
    deep: bool = True
    max_depth: int = MAX_DEPTH

    @property
    def any(self) -> bool:
        """Whether a flaw is possible at all."""
        return self.non_finite or self.surrogates or self.deep

    def find(self, value: Any) -> Flaw | None:
        """The first flaw of ``value`` (the document or a part of it) among those suspected."""
        if not self.any:
            return None
        return find_flaw(
            value, max_depth=self.max_depth, strings=self.surrogates, numbers=self.non_finite
        )


@dataclass(frozen=True)
class Parsed:
    """A parsed JSON document, and which flaws it may have."""

    value: Any
    suspicion: Suspicion

    @property
    def suspect(self) -> bool:
        """Whether ``find_flaw`` may find anything."""
        return self.suspicion.any

    def flaw(self) -> Flaw | None:
        """The first flaw of the document, or None."""
        return self.suspicion.find(self.value)


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Parsed:
    """Parse JSON as ``json.loads`` does, noting cheaply which flaws it may have.

    A kind of flaw is ruled out when the text shows it cannot be there: no
    non-finite number was parsed; the text holds no surrogate (escaped or
    raw); it has too few brackets to nest past ``max_depth``. Raises
    ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``) for text
    that is not JSON, and ``TooDeepToParse`` when ``json`` cannot recurse deep
    enough.
    """
    if isinstance(data, bytes | bytearray):
        # What json.loads does with bytes, done here so the text can be scanned.
        encoding = json.detect_encoding(data)
        try:
            text, raw_surrogates = bytes(data).decode(encoding), False
        except UnicodeDecodeError:
            text, raw_surrogates = bytes(data).decode(encoding, "surrogatepass"), True
    else:
        text, raw_surrogates = data, _has_raw_surrogate(data)
    non_finite = False

    def number(literal: str) -> float:
        nonlocal non_finite
        value = float(literal)
        if not math.isfinite(value):
            non_finite = True
        return value

    def constant(literal: str) -> float:
        nonlocal non_finite
        non_finite = True
        return float(literal)

    try:
        value = json.loads(text, parse_float=number, parse_constant=constant)
    except RecursionError:
        raise TooDeepToParse(deep_path(text, max_depth) or ()) from None
    suspicion = Suspicion(
        non_finite=non_finite,
        surrogates=raw_surrogates or _has_surrogate_escape(text) or _NUL_ESCAPE in text,
        deep=text.count("[") + text.count("{") > max_depth,
        max_depth=max_depth,
    )
    return Parsed(value, suspicion)


def text_may_have_flaws(text: str, *, max_depth: int = MAX_DEPTH) -> bool:
    """False when JSON ``text`` certainly parses to a value without flaws (a scan, no parse).

    For stored text, read back in bulk: most of it is clean and need not be parsed.
    """
    return (
        text.count("[") + text.count("{") > max_depth
        or _has_surrogate_escape(text)
        or _NUL_ESCAPE in text
        or _has_raw_surrogate(text)
        or _NON_FINITE_TEXT.search(text) is not None
    )


def _has_surrogate_escape(text: str) -> bool:
    return "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None


def _has_raw_surrogate(text: str) -> bool:
    # Faster than a regular expression over a long text: UTF-8 cannot encode one.
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def loads_sanitized(text: str, *, max_depth: int = MAX_DEPTH) -> tuple[Any, list[Flaw]]:
    """Parse stored JSON ``text`` and sanitize it, however deep it nests.

    Text too deep for ``json`` is cut first (``cut_too_deep``); each cut
    counts as a ``TOO_DEEP`` flaw at the top (the places are not tracked).
    """
    cuts = 0
    try:
        parsed = loads(text, max_depth=max_depth)
    except TooDeepToParse:
        text, cuts = cut_too_deep(text, max_depth)
        parsed = loads(text, max_depth=max_depth)
    value, flaws = sanitize(parsed.value, max_depth=max_depth)
    flaws.extend(Flaw(Kind.TOO_DEEP, ()) for _ in range(cuts))
    return value, flaws


# Compact, and strict: NaN and Infinity raise rather than being written. No
# circular-reference bookkeeping: a cycle recurses until RecursionError, and
# ``sanitize`` cuts it at MAX_DEPTH like any too-deep value.
_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)
# The same encoder, made once: JSONEncoder.encode builds it again on every call,
# which costs three times what encoding a small value does. (json.encoder's C
# accelerator; without it, JSONEncoder.encode.)
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_STRICT_C = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(
        None,  # markers: no circular-reference check
        _STRICT.default,  # raises TypeError for a value JSON cannot hold
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ":",  # key separator
        ",",  # item separator
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
)


def _strict(value: Any) -> str:
    """``_STRICT.encode(value)``, without building the encoder each time."""
    if _STRICT_C is None:
        return _STRICT.encode(value)
    return "".join(_STRICT_C(value, 0))


# In text written with ASCII escapes: a high surrogate's escape with no low one
# after it, or a low one with no high one before it. (A pair is a character
# past U+FFFF, and so is text holding two lone surrogates that make one.)
# Written to start with the literal \ud, which the regular expression engine
# looks for at C speed.
_LONE_ESCAPE = re.compile(
    r"\\ud(?:[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2}\\ud)[c-f][0-9a-f]{2})"
)


class Encoded(NamedTuple):
    """A value as JSON text, with every flaw replaced; ``value`` is what the text holds."""

    value: Any  # the value given when it had no flaw, else its sanitized copy
    text: str
    flaws: tuple[Flaw, ...]


_CLEAN = tuple.__new__  # builds an Encoded without NamedTuple's Python-level __new__


def encode(value: Any, *, max_depth: int = MAX_DEPTH) -> Encoded:
    """Compact JSON text of ``value`` with every flaw replaced, as ``sanitize`` does.

    Built for the hot path: the value is encoded once, strictly, and its text
    scanned (at C speed). The value is sanitized only when the encoding fails
    (a non-finite number, nesting too deep to encode) or the text shows a
    lone surrogate or a NUL, and its containers are walked only when the text has
    more brackets than ``max_depth`` (a walk is cheaper than finding the
    brackets outside strings). The text is ASCII (non-ASCII characters are
    escaped), so its length is its size in bytes. Raises ``TypeError`` for a
    value JSON cannot hold (a datetime, a set).
    """
    try:  # _strict(value), inlined: this is the hot path
        text = "".join(_STRICT_C(value, 0)) if _STRICT_C is not None else _STRICT.encode(value)
    except (ValueError, RecursionError):  # NaN or Infinity; nesting json cannot follow
        return _sanitized(value, None, max_depth)
    if (
        ("\\ud" in text and _LONE_ESCAPE.search(text) is not None)
        or _NUL_ESCAPE in text
        or (text.count("[") + text.count("{") > max_depth and _too_deep(value, 1, max_depth))
    ):
        return _sanitized(value, text, max_depth)
    return _CLEAN(Encoded, (value, text, ()))


def _sanitized(value: Any, text: str | None, max_depth: int) -> Encoded:
    clean, flaws = sanitize(value, max_depth=max_depth)
    if not flaws and text is not None:  # an escaped backslash before "ud800", say
        return Encoded(value, text, ())
    return Encoded(clean, _strict(clean), tuple(flaws))


def described(flaws: Sequence[Flaw], limit: int = 10) -> list[dict[str, str]]:
    """The first ``limit`` flaws as ``{"kind", "pointer"}``, for a log or a history line.

    Places only, never content (a surrogate in a key is shown as U+FFFD).
    """
    return [{"kind": f.kind.value, "pointer": f.pointer} for f in flaws[:limit]]


def summary(flaws: Sequence[Flaw], limit: int = 5) -> str:
    """The first ``limit`` flaws in one line, for a log: kinds and places, never content."""
    shown = ", ".join(f"{f.kind.value} at {f.pointer or '/'}" for f in flaws[:limit])
    return shown + (f" and {len(flaws) - limit} more" if len(flaws) > limit else "")


def find_flaw(
    value: Any, *, max_depth: int = MAX_DEPTH, strings: bool = True, numbers: bool = True
) -> Flaw | None:
    """The first flaw of ``value`` in document order, or None.

    A lone surrogate in an object's key is reported at that member. A
    container is too deep when ``max_depth`` containers hold it (the
    outermost value is at depth 1). ``strings=False`` skips the surrogate
    check and ``numbers=False`` the non-finite one (when a scan of the text
    ruled them out).
    """
    if not (strings or numbers) and not _too_deep(value, 1, max_depth):
        return None  # the common case, found by the fast walk
    return _find(value, [], 1, max_depth, strings, numbers)


def _too_deep(value: Any, depth: int, max_depth: int) -> bool:
    """Whether a container in ``value`` is past ``max_depth`` (containers only: fast)."""
    kind = type(value)
    if kind is not dict and kind is not list and kind is not tuple:
        return False
    if depth > max_depth:
        return True
    for item in value.values() if kind is dict else value:
        kind = type(item)
        if (kind is dict or kind is list or kind is tuple) and _too_deep(
            item, depth + 1, max_depth
        ):
            return True
    return False


def _find(
    value: Any,
    path: list[str | int],
    depth: int,
    max_depth: int,
    strings: bool = True,
    numbers: bool = True,
) -> Flaw | None:
    if isinstance(value, str):
        kind = _bad_text(value) if strings else None
        return None if kind is None else Flaw(kind, tuple(path))
    if isinstance(value, float):
        return None if not numbers or math.isfinite(value) else Flaw(Kind.NON_FINITE, tuple(path))
    if isinstance(value, dict | list | tuple):
        if depth > max_depth:
            return Flaw(Kind.TOO_DEEP, tuple(path))
        for key, item in _members(value):
            path.append(key)
            try:
                kind = _bad_text(key) if strings and isinstance(key, str) else None
                if kind is not None:
                    return Flaw(kind, tuple(path))
                flaw = _find(item, path, depth + 1, max_depth, strings, numbers)
            finally:
                path.pop()
            if flaw is not None:
                return flaw
    return None


def _members(value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> Iterator[tuple[Any, Any]]:
    return iter(value.items()) if isinstance(value, dict) else enumerate(value)


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _bad_text(text: str) -> Kind | None:
    """The flaw of a string or key: a lone surrogate, a NUL, or none."""
    if _has_surrogate(text):
        return Kind.LONE_SURROGATE
    return Kind.NUL if "\x00" in text else None


def sanitize(value: Any, *, max_depth: int = MAX_DEPTH) -> tuple[Any, list[Flaw]]:
    """A copy of ``value`` with every flaw replaced, and the flaws found.

    Lone surrogates and NUL (in keys and values) become U+FFFD, non-finite numbers
    null, and containers past ``max_depth`` the string ``"<removed: too
    deep>"``. Values of other types (datetimes, ...) are kept as they are.
    When nothing is found, the value itself is returned.
    """
    flaws: list[Flaw] = []
    clean = _sanitize(value, [], 1, max_depth, flaws)
    return (clean if flaws else value), flaws


def _sanitize(
    value: Any, path: list[str | int], depth: int, max_depth: int, flaws: list[Flaw]
) -> Any:
    if isinstance(value, str):
        kind = _bad_text(value)
        if kind is not None:
            flaws.append(Flaw(kind, tuple(path)))
            return clean_text(value)
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        flaws.append(Flaw(Kind.NON_FINITE, tuple(path)))
        return None
    if isinstance(value, list | tuple):  # a tuple (from an expression) is a JSON array
        if depth > max_depth:
            flaws.append(Flaw(Kind.TOO_DEEP, tuple(path)))
            return TOO_DEEP
        items = []
        for index, item in enumerate(value):
            path.append(index)
            items.append(_sanitize(item, path, depth + 1, max_depth, flaws))
            path.pop()
        return items
    if isinstance(value, dict):
        if depth > max_depth:
            flaws.append(Flaw(Kind.TOO_DEEP, tuple(path)))
            return TOO_DEEP
        members = {}
        for key, item in value.items():
            path.append(key)
            kind = _bad_text(key) if isinstance(key, str) else None
            if kind is not None:
                flaws.append(Flaw(kind, tuple(path)))
                key = clean_text(key)
            elif isinstance(key, float) and not math.isfinite(key):
                # Only an expression builds one (JSON keys are text); json writes
                # it as "NaN" or refuses it, so it becomes the key "null".
                flaws.append(Flaw(Kind.NON_FINITE, tuple(path)))
                key = "null"
            members[key] = _sanitize(item, path, depth + 1, max_depth, flaws)
            path.pop()
        return members
    return value


@dataclass
class _Frame:
    """An open container while scanning JSON text."""

    is_object: bool
    index: int = 0
    key: str | int = ""
    expects_key: bool = False

    def place(self) -> str | int:
        return self.key if self.is_object else self.index


def _scan(text: str) -> Iterator[tuple[re.Match[str], list[_Frame]]]:
    """Each bracket token of ``text`` with the containers open before it.

    Object keys and array indexes are tracked so that a place can be named;
    scalars other than strings are skipped (they match no token).
    """
    frames: list[_Frame] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            top = frames[-1] if frames else None
            if top is not None and top.is_object and top.expects_key:
                top.key = _key(token)
                top.expects_key = False
        elif token == ",":
            if frames:
                top = frames[-1]
                top.index += 1
                top.expects_key = top.is_object
        else:
            yield match, frames
            if token in "[{":
                frames.append(_Frame(is_object=token == "{", expects_key=token == "{"))
            elif frames:
                frames.pop()


def _key(token: str) -> str:
    try:
        key = json.loads(token)
    except ValueError:
        return token[1:-1]
    return key if isinstance(key, str) else token[1:-1]


def deep_path(text: str, max_depth: int = MAX_DEPTH) -> Path | None:
    """The path of the first container of JSON ``text`` past ``max_depth``, or None.

    Works on text ``json`` cannot parse for its depth; the text before that
    place is assumed to be JSON.
    """
    for match, frames in _scan(text):
        if match.group() in "[{" and len(frames) >= max_depth:
            return tuple(f.place() for f in frames)
    return None


def cut_too_deep(text: str, max_depth: int = MAX_DEPTH) -> tuple[str, int]:
    """JSON ``text`` with each container past ``max_depth`` replaced by ``"<removed: too deep>"``.

    Returns the new text and how many containers were cut. For documents too
    deep for ``json`` to parse (it would run out of recursion first).
    """
    pieces: list[str] = []
    kept_from = 0
    cut_at: int | None = None  # depth of the container being cut, while inside one
    cuts = 0
    for match, frames in _scan(text):
        opening = match.group() in "[{"
        if cut_at is None:
            if opening and len(frames) >= max_depth:
                pieces.append(text[kept_from : match.start()])
                pieces.append(json.dumps(TOO_DEEP))
                cut_at = len(frames)
                cuts += 1
        elif not opening and len(frames) - 1 == cut_at:
            kept_from = match.end()
            cut_at = None
    if cut_at is not None:  # unterminated: cut to the end
        kept_from = len(text)
    pieces.append(text[kept_from:])
    return "".join(pieces), cuts
