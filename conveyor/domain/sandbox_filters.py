"""The size checks the bounded evaluator makes before operations that multiply.

``conveyor.domain.sandbox`` checks every value after it is built. That is too
late for an operation whose result can be far larger than its inputs: it
would build a gigabyte first. Those are checked here, *before* they run,
from the sizes of their inputs:

- operators: ``*`` (repeat), ``**`` (power), ``%`` (printf-style formatting);
- ``str`` (and ``bytes``) methods: padding widths (``ljust``, ``rjust``,
  ``center``, ``zfill``, ``int.to_bytes``), ``expandtabs``, ``replace``,
  ``join``; ``translate`` is refused (one character can become any text);
  ``str.format`` counts what it writes, field by field;
- filters: ``center``, ``indent``, ``format``, ``join``, ``replace``,
  ``batch``, ``slice``; ``sum`` adds numbers only (adding lists or strings is
  quadratic).

Filters whose cost is not linear in their output are replaced or removed:
``wordwrap`` is a linear rewrite here (``break_on_hyphens`` is accepted and
ignored); ``urlize`` and ``pprint`` are removed. Every other filter's result
goes through the after-the-fact check. docs/concepts.md lists all this.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Mapping
from functools import wraps
from typing import Any

from jinja2 import pass_environment
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import _PassArg
from markupsafe import Markup

from conveyor.domain.sandbox import Budget, current

REMOVED_FILTERS = frozenset({"urlize", "pprint"})
# Filters checked before they run, by what they are given.
_PADDING_FILTERS = frozenset({"center", "batch", "slice"})
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "to_bytes"})
# At most this many slices: each is a list built whether it is empty or not.
MAX_SLICES = 10_000
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


# -- printf and str.format ----------------------------------------------------


def _percent(budget: Budget, fmt: str, args: Any) -> None:
    """``fmt % args``: widths, and every conversion writing the largest argument."""
    specs = _PERCENT_SPEC.findall(fmt)
    for width, precision in specs:
        for part in (width, precision):
            if part == "*":
                raise SecurityError("`*` widths are not allowed in templates")
            if part:
                budget.check_width(int(part), "printf-style formatting")
    if isinstance(args, tuple | list):
        values: Iterable[Any] = args
    elif isinstance(args, Mapping):
        values = args.values()
    else:
        values = (args,)
    widest = max((budget.expanded(v) for v in values), default=0)
    budget.expect(len(fmt) + len(specs) * widest, "a formatted string (`%`)")


def _brace_format_spec(budget: Budget, fmt: str) -> None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format will say what is wrong
    for _, _, spec, _ in parsed:
        if spec and "{" in spec:
            raise SecurityError("nested format fields are not allowed in templates")
        for digits in re.findall(r"\d+", spec or ""):
            budget.check_width(int(digits), "str.format")


class _Counting:
    """Mixed into Jinja's sandboxed formatters: each field's text is counted."""

    budget: Budget
    total: int

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.budget.expanded(value)
        text = super().format_field(value, format_spec)  # type: ignore[misc]
        self.total += len(text)
        self.budget.expect(self.total, "a formatted string (`format`)")
        return text


class _Formatter(_Counting, SandboxedFormatter):
    pass


class _EscapeFormatter(_Counting, SandboxedEscapeFormatter):
    pass


def bounded_str_format(env: Any, method: Any) -> Callable[..., str]:
    """``str.format`` / ``format_map`` bound to ``method.__self__``, counted as it writes."""
    text = method.__self__
    budget = current()
    _brace_format_spec(budget, text)
    is_map = method.__name__ == "format_map"

    @wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        if is_map:
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one argument")
            kwargs, args = args[0], ()
        formatter: _Formatter | _EscapeFormatter
        if isinstance(text, Markup):
            formatter = _EscapeFormatter(env, escape=text.escape)
        else:
            formatter = _Formatter(env)
        formatter.budget, formatter.total = budget, 0
        written = formatter.vformat(text, args, kwargs)
        return Markup(written) if isinstance(text, Markup) else str(written)

    return wrapper


# -- operators and calls --------------------------------------------------------


def precheck_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    """Refuse ``*``, ``**`` and ``%`` whose result would be over the limit."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                budget.expect(budget.expanded(seq) * max(times, 0), "a repeated value (`*`)")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0:
            budget.expect(int(right * math.log2(abs(left))), "a power (`**`)")
    elif operator == "%" and isinstance(left, str):
        _percent(budget, left, right)


def _replace_size(text: str | bytes, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    hits = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _join_size(budget: Budget, sep: str | bytes, items: list[Any]) -> int:
    total = len(sep) * max(len(items) - 1, 0)
    for item in items:
        total += budget.expanded(item)
        budget.expect(total, "a joined string (`join`)")
    return total


def precheck_call(
    budget: Budget, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Check the arguments of a method call that could build a huge value.

    Returns the positional arguments to call with (an iterable given to
    ``join`` is made a list first, so that it can be measured and then used).
    """
    owner = getattr(func, "__self__", None)
    if not isinstance(owner, str | bytes | int) or isinstance(owner, bool):
        return args
    name = getattr(func, "__name__", "")
    if name in _PADDING_METHODS:
        for arg in (*args, *kwargs.values()):
            budget.check_width(arg, f"{type(owner).__name__}.{name}")
    elif isinstance(owner, int):
        return args
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
            budget.expect(len(owner) + tabs * max(size, 0), f"the result of {name}")
    elif name == "replace":
        old, new = (*args, None, None)[:2]
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        budget.expect(_replace_size(owner, old, new, count), "the result of replace")
    elif name == "join" and args:
        items = list(args[0])
        _join_size(budget, owner, items)
        return (items, *args[1:])
    elif name in ("translate", "maketrans"):
        raise SecurityError(f"str.{name} is not available in templates")
    return args


# -- filters ----------------------------------------------------------------------


def _wordwrap(
    environment: Any,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """Jinja's ``wordwrap``, in one pass: words are packed greedily into lines."""
    if width < 1:
        raise ValueError("wordwrap: width must be at least 1")
    sep = environment.newline_sequence if wrapstring is None else wrapstring
    budget = current()
    lines: list[str] = []
    for paragraph in s.splitlines():
        budget.tick()
        words: list[str] = []
        length = 0
        for word in paragraph.split():
            pieces = (
                [word[i : i + width] for i in range(0, len(word), width)]
                if break_long_words and len(word) > width
                else [word]
            )
            for piece in pieces:
                if words and length + 1 + len(piece) > width:
                    lines.append(" ".join(words))
                    words, length = [], 0
                length += len(piece) + (1 if words else 0)
                words.append(piece)
        lines.append(" ".join(words))
    budget.expect(sum(map(len, lines)) + len(sep) * len(lines), "the result of wordwrap")
    return sep.join(lines)


def _sum_numbers(func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)
    def summed(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if not isinstance(start, int | float) or isinstance(start, bool):
            raise SecurityError("the `sum` filter adds numbers only")
        return func(environment, iterable, attribute, start)

    return summed


def _precheck_filter(
    budget: Budget, name: str, value: Any, rest: tuple[Any, ...], kw: dict[str, Any]
) -> tuple[Any, ...]:
    """Checks made before a filter runs; returns its (possibly materialised) arguments."""
    if name in _PADDING_FILTERS:
        for arg in (*rest, *kw.values()):
            budget.check_width(arg, f"the `{name}` filter")
        if name == "slice" and rest and isinstance(rest[0], int) and rest[0] > MAX_SLICES:
            raise budget.too_large_error(f"the `slice` filter makes at most {MAX_SLICES} slices")
    elif name == "indent" and isinstance(value, str):
        width = rest[0] if rest else kw.get("width", 4)
        pad = len(width) if isinstance(width, str) else width
        if isinstance(pad, int):
            budget.expect(len(value) + pad * (value.count("\n") + 1), "the result of `indent`")
    elif name == "format" and isinstance(value, str):
        _percent(budget, value, kw if kw else rest)
    elif name == "replace" and isinstance(value, str) and len(rest) >= 2:
        count = rest[2] if len(rest) > 2 else kw.get("count", -1)
        budget.expect(_replace_size(value, rest[0], rest[1], count), "the result of `replace`")
    elif name == "join":
        items = list(value)
        sep = rest[0] if rest else kw.get("d", "")
        if isinstance(sep, str) and "attribute" not in kw and len(rest) < 2:
            _join_size(budget, sep, items)
        return (items,)
    return (value,)


def _guard(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter: checks before (see ``_precheck_filter``), and on the result."""
    passes = _PassArg.from_obj(func) is not None  # first argument: context or environment

    @wraps(func)  # keeps the pass_context / pass_environment marker
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        at = 1 if passes else 0
        if len(args) > at:
            value = _precheck_filter(budget, name, args[at], args[at + 1 :], kwargs)
            args = (*args[:at], *value, *args[at + 1 :])
        return budget.built(func(*args, **kwargs), f"the result of the `{name}` filter")

    return guarded


def bounded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Jinja's filters as the bounded environment offers them."""
    replaced: dict[str, Callable[..., Any]] = {
        "wordwrap": pass_environment(_wordwrap),
        "sum": _sum_numbers(filters["sum"]),
    }
    return {
        name: _guard(name, replaced.get(name, func))
        for name, func in filters.items()
        if name not in REMOVED_FILTERS
    }
