"""Message templates: email (subject, text, html) and push (title, body, data).

Rendering uses the bounded evaluator (``conveyor.domain.sandbox``): Jinja2's
immutable sandbox with ``StrictUndefined`` (a missing variable is an error
naming it). Only the ``html`` part is autoescaped; subject, text, title, body
and data are plain text.

A template is code its author controls, so one message's render runs under
one budget with the limits of ``RenderLimits``: ``timeout`` seconds of CPU for
all its parts (``template_timeout``), and ``max_chars`` for any one rendered
part or any value built while rendering it (``template_too_large``). The
output is produced in chunks and counted, so an enormous loop stops as soon as
its text is over the limit. The caller runs the render in a worker thread
(``asyncio.to_thread``) so that the event loop is not blocked while it lasts.

This module is pure: no I/O, no database.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jinja2 import Template, TemplateError, UndefinedError
from jinja2.exceptions import SecurityError

from conveyor.domain import jsonsafe, sandbox
from conveyor.domain.errors import ConveyorError, ExpressionError, ExpressionTooLarge
from conveyor.domain.jinja_context import new_context

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


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on rendering one message."""

    timeout: float = 2.0  # CPU seconds for all the parts of one message
    max_chars: int = 512_000  # characters of one rendered part, or of any value built
    max_source: int = 262_144  # characters of one part's source (the API's limit)

    def budget(self) -> sandbox.Budget:
        """A budget for one message, raising this module's errors."""
        limits = sandbox.Limits(
            timeout=self.timeout,
            max_value=self.max_chars,
            max_alloc=8 * self.max_chars,
            max_source=self.max_source,
        )
        return sandbox.Budget(
            limits, timeout_error=TemplateTimeout, too_large_error=TemplateTooLarge
        )


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


# -- rendering ----------------------------------------------------------------


def _compiled(source: str, html: bool, limits: RenderLimits) -> tuple[Template, dict[str, Any]]:
    try:
        return sandbox.compiled("html" if html else "text", source, limits.max_source)
    except ExpressionError as exc:
        if isinstance(exc, ExpressionTooLarge):
            raise TemplateTooLarge(exc.detail) from exc
        raise TemplateRenderError(exc.detail) from exc


@dataclass
class _Render:
    """One message's render, under one budget."""

    limits: RenderLimits
    budget: sandbox.Budget

    def text(self, field_name: str, source: str, context: Mapping[str, Any]) -> str:
        """Render one part, streaming its output so the size check comes early."""
        self.budget.field = field_name
        template, base = _compiled(source, field_name in HTML_FIELDS, self.limits)
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
        out = jsonsafe.clean_text("".join(chunks))  # a subject is a text column
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

    limits = RenderLimits()

    def check(loc: list[str | int], source: str) -> None:
        try:
            _compiled(source, loc[0] in HTML_FIELDS, limits)
        except TemplateTooLarge as exc:
            problems.append({"loc": loc, "msg": exc.detail, "type": exc.code})
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
    limits = limits or RenderLimits()
    render = _Render(limits, limits.budget())
    out: dict[str, Any] = {}
    current = ""
    with sandbox.using(render.budget):
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
    return out
