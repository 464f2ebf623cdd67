"""Message templates: email (subject, text, html) and push (title, body, data).

Rendering uses Jinja2's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``
(a missing variable is an error naming it). Only the ``html`` part is
autoescaped; subject, text, title, body and data are plain text.

A template is code its author controls, so a render is bounded in time and in size:

- **Time.** While a message renders, a trace function (``sys.settrace``, for the
  rendering thread only) is called on every line executed by compiled template
  code and raises ``TemplateTimeout`` once the deadline has passed. Any loop
  written in the template executes lines, so an endless or enormous loop stops
  within one line of the deadline. The caller runs the render in a worker
  thread (``asyncio.to_thread``) so that the event loop is not blocked while it
  lasts; the deadline is what stops it, not the thread.
- **Size.** Output is produced in chunks (``Template.generate``) and counted: a
  part longer than ``max_chars`` stops with ``TemplateTooLarge``. So that one
  line cannot build a giant value before that check, the operators that grow
  values (``*``, ``+``, ``**``, ``%`` and ``~``), every filter's result, and the
  width arguments of padding and formatting (``center``, ``indent``, ``batch``,
  ``slice``, ``format`` and ``str.ljust``/``rjust``/``center``/``zfill``/``expandtabs``/
  ``format``) are checked against the same limit; ``lipsum`` is removed. One
  operation may still build a value up to a small multiple of the limit before
  it is refused (``replace`` on a long string, say).

This module is pure: no I/O, no database.
"""

from __future__ import annotations

import math
import re
import string
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from types import FrameType
from typing import Any, Literal

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conveyor.domain.errors import ConveyorError, ExpressionError
from conveyor.domain.jinja_context import globals_of, new_context

Channel = Literal["email", "push"]
CHANNELS: tuple[Channel, ...] = ("email", "push")
# The text parts of each channel, in render order; push also has `data`.
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "push": ("title", "body"),
}
HTML_FIELDS = frozenset({"html"})
# Single-line parts: whitespace runs (newlines included) collapse to one space,
# which also keeps a rendered subject from injecting mail headers.
ONE_LINE_FIELDS = frozenset({"subject", "title"})
# Jinja names compiled code after the template name; from_string has none.
_TEMPLATE_FILENAME = "<template>"


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on rendering one message."""

    timeout: float = 2.0  # seconds for all the parts of one message
    max_chars: int = 512_000  # characters of one rendered part, or of any value built


class TemplateRenderError(ConveyorError):
    """A template could not be rendered."""

    code = "template_error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class TemplateTimeout(TemplateRenderError):
    """Rendering the template took longer than its time limit."""

    code = "template_timeout"


class TemplateTooLarge(TemplateRenderError):
    """The rendered template (or a value built while rendering it) is over the size limit."""

    code = "template_too_large"


class InvalidTemplate(ExpressionError):
    """The template content is invalid (``errors`` names each field)."""

    code = "invalid_template"


# -- the bounded environment -------------------------------------------------


@dataclass
class _Budget:
    limits: RenderLimits
    deadline: float = math.inf
    field: str | None = None


_budget: ContextVar[_Budget | None] = ContextVar("conveyor_template_budget", default=None)


def _limits() -> RenderLimits:
    budget = _budget.get()
    # Outside a render (constant folding while compiling) the default limits hold.
    return budget.limits if budget is not None else RenderLimits()


def _too_large(what: str) -> TemplateTooLarge:
    return TemplateTooLarge(f"{what} is over the limit of {_limits().max_chars} characters")


def _size(value: Any) -> int:
    if isinstance(value, str | list | tuple | dict | bytes):
        return len(value)
    return 0


def _check_value(value: Any, what: str) -> Any:
    if _size(value) > _limits().max_chars:
        raise _too_large(what)
    if isinstance(value, int) and not isinstance(value, bool):
        # Repeated squaring makes numbers that take seconds to print.
        if value.bit_length() > _limits().max_chars:
            raise _too_large(what)
    return value


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and not isinstance(width, bool) and width > _limits().max_chars:
        raise _too_large(f"the width given to {what}")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(fmt: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for part in (width, precision):
            if part == "*":
                raise SecurityError("`*` widths are not allowed in templates")
            if part and int(part) > _limits().max_chars:
                raise _too_large("a format width")


def _check_brace_format(fmt: str) -> None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format will say what is wrong
    for _, _, spec, _ in parsed:
        if spec and "{" in spec:
            raise SecurityError("nested format fields are not allowed in templates")
        for digits in re.findall(r"\d+", spec or ""):
            if int(digits) > _limits().max_chars:
                raise _too_large("a format width")


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter: refuse giant widths before, and giant results after."""
    padding = name in {"center", "indent", "batch", "slice"}

    @wraps(func)  # keeps the pass_context / pass_environment markers
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if padding:
            for arg in (*args, *kwargs.values()):
                _check_width(arg, f"the `{name}` filter")
            text = next((a for a in args if isinstance(a, str)), "")
            width = next((a for a in (*args[1:], *kwargs.values()) if isinstance(a, int)), 0)
            if width * (text.count("\n") + 1) > _limits().max_chars:
                raise _too_large(f"the result of the `{name}` filter")
        if name == "format" and args and isinstance(args[0], str):
            _check_percent_format(args[0])
        return _check_value(func(*args, **kwargs), f"the result of the `{name}` filter")

    return guarded


_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` so that the joined string is size-checked."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus the size checks described in the module docstring."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=autoescape)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.globals.pop("lipsum", None)

    def checked_concat(self, value: Any) -> Any:
        """The result of ``~``, refused when over the size limit."""
        return _check_value(value, "a joined string (`~`)")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse operations that would build values over the size limit, then do them."""
        limit = _limits().max_chars
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _size(seq) and isinstance(times, int) and _size(seq) * times > limit:
                    raise _too_large("a repeated value (`*`)")
        elif operator == "+" and _size(left) + _size(right) > limit:
            raise _too_large("a concatenated value (`+`)")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * math.log2(abs(left)) > limit:
                raise _too_large("a power (`**`)")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return _check_value(super().call_binop(context, operator, left, right), "a value")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Check padding widths given to string methods, then call."""
        if isinstance(getattr(__obj, "__self__", None), str):
            if getattr(__obj, "__name__", "") in _PADDING_METHODS:
                for arg in (*args, *kwargs.values()):
                    _check_width(arg, f"str.{__obj.__name__}")
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_value(result, "the result of a call")

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Check format strings before ``str.format`` can use them."""
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            _check_brace_format(obj)
        return super().getattr(obj, attribute)


_TEXT_ENV = _BoundedEnvironment(autoescape=False)
_HTML_ENV = _BoundedEnvironment(autoescape=True)


def _env(field_name: str) -> _BoundedEnvironment:
    return _HTML_ENV if field_name in HTML_FIELDS else _TEXT_ENV


@lru_cache(maxsize=1024)
def _compile(source: str, html: bool) -> Template:
    return (_HTML_ENV if html else _TEXT_ENV).from_string(source)


@lru_cache(maxsize=1024)
def _compiled(source: str, html: bool) -> tuple[Template, dict[str, Any]]:
    """A compiled template with its globals as one plain dict, made once."""
    template = _compile(source, html)
    return template, globals_of(template)


# -- the deadline ------------------------------------------------------------


def _tracer(budget: _Budget) -> Callable[[FrameType, str, Any], Any]:
    """A trace function that stops template code once the budget's deadline passed."""

    def on_line(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and time.monotonic() > budget.deadline:
            raise TemplateTimeout(
                f"rendering took longer than {budget.limits.timeout:g} s", field=budget.field
            )
        return on_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        # Only compiled template code is traced; filters and Python code run untraced.
        return on_line if frame.f_code.co_filename == _TEMPLATE_FILENAME else None

    return on_call


@dataclass
class _Render:
    """One message's render: the budget, active while ``run`` executes."""

    limits: RenderLimits
    budget: _Budget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = _Budget(self.limits, deadline=time.monotonic() + self.limits.timeout)

    def text(self, field_name: str, source: str, context: Mapping[str, Any]) -> str:
        """Render one part, streaming its output so the size check comes early."""
        self.budget.field = field_name
        template, base = _compiled(source, field_name in HTML_FIELDS)
        chunks: list[str] = []
        total = 0
        for chunk in _generate(template, base, context):
            total += len(chunk)
            if total > self.limits.max_chars:
                raise TemplateTooLarge(
                    f"{field_name}: the rendered text is over the limit of "
                    f"{self.limits.max_chars} characters",
                    field=field_name,
                )
            chunks.append(chunk)
        out = "".join(chunks)
        return " ".join(out.split()) if field_name in ONE_LINE_FIELDS else out

    def data(self, value: Any, context: Mapping[str, Any], path: str) -> Any:
        """Render every string inside push ``data`` (keys stay as they are)."""
        if isinstance(value, str):
            return self.text(path, value, context) if _is_template(value) else value
        if isinstance(value, dict):
            return {k: self.data(v, context, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(v, context, f"{path}.{i}") for i, v in enumerate(value)]
        return value


def _generate(
    template: Template, base: dict[str, Any], context: Mapping[str, Any]
) -> Iterator[str]:
    """``template.generate(**context)``, with the context built from ``base`` (jinja_context)."""
    ctx = new_context(template, base, context)
    try:
        yield from template.root_render_func(ctx)
    except Exception:
        yield template.environment.handle_exception()


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def _explain(exc: Exception, field_name: str) -> TemplateRenderError:
    if isinstance(exc, TemplateRenderError):
        if exc.field is None:
            exc.field = field_name
        if not exc.detail.startswith(f"{field_name}:"):
            exc.detail = f"{field_name}: {exc.detail}"
            exc.args = (exc.detail,)
        return exc
    if isinstance(exc, UndefinedError):
        return TemplateRenderError(f"{field_name}: {exc.message}", field=field_name)
    return TemplateRenderError(f"{field_name}: {type(exc).__name__}: {exc}", field=field_name)


# -- public API --------------------------------------------------------------


def check_content(channel: str, content: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Compile every part of a template; return the problems as ``{loc, msg, type}``.

    ``loc`` is the field's name (``["html"]``, ``["data", "url"]``), so an API
    can point at it. An empty list means every part compiles.
    """
    problems: list[dict[str, Any]] = []

    def check(loc: list[str | int], source: str) -> None:
        try:
            _compile(source, loc[0] in HTML_FIELDS)
        except (TemplateError, TemplateRenderError, SecurityError) as exc:
            msg = getattr(exc, "message", None) or str(exc)
            problems.append({"loc": loc, "msg": f"does not compile: {msg}", "type": "bad_template"})

    def walk(loc: list[str | int], value: Any) -> None:
        if isinstance(value, str) and _is_template(value):
            check(loc, value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk([*loc, k], v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk([*loc, i], v)

    for name in TEXT_FIELDS[channel]:
        source = content.get(name)
        if isinstance(source, str):
            check([name], source)
    if channel == "push":
        walk(["data"], content.get("data") or {})
    return problems


def render_content(
    channel: str,
    content: Mapping[str, Any],
    context: Mapping[str, Any],
    limits: RenderLimits | None = None,
) -> dict[str, Any]:
    """Render a template version's content against ``context``.

    Returns the same keys as ``content`` (absent or null parts stay null).

    Raises:
        TemplateRenderError: a part failed (a missing variable is named);
            ``TemplateTimeout`` and ``TemplateTooLarge`` are its subclasses.
    """
    render = _Render(limits or RenderLimits())
    token = _budget.set(render.budget)
    previous = sys.gettrace()
    sys.settrace(_tracer(render.budget))
    out: dict[str, Any] = {}
    current = ""
    try:
        for name in TEXT_FIELDS[channel]:
            current = name
            source = content.get(name)
            out[name] = render.text(name, source, context) if isinstance(source, str) else None
        if channel == "push":
            current = "data"
            out["data"] = render.data(content.get("data") or {}, context, "data")
    except Exception as exc:  # anything raised by template code is the template's fault
        raise _explain(exc, render.budget.field or current) from exc
    finally:
        sys.settrace(previous)
        _budget.reset(token)
    return out
