"""Rendering compiled Jinja templates without copying their globals each time.

Jinja builds every render's context from ``template.globals``, a ChainMap,
by iterating it twice (``dict(globals, **vars)`` and ``set(globals)``); for
the short expressions and templates automations use, that was a third of a
render. Here the globals are copied to a plain dict once per compiled template
(``globals_of``, cached by the callers with the template) and each render's
context is built from that copy: the same context Jinja would have built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Template
from jinja2.runtime import Context


def globals_of(template: Template) -> dict[str, Any]:
    """The template's globals as one plain dict (made once, with the compiled template)."""
    return dict(template.globals)


def new_context(template: Template, base: dict[str, Any], values: Mapping[str, Any]) -> Context:
    """The context ``template.render(**values)`` would build, given ``base = globals_of(...)``."""
    env = template.environment
    return env.context_class(env, {**base, **values}, template.name, template.blocks, globals=base)


def render(template: Template, base: dict[str, Any], values: Mapping[str, Any]) -> str:
    """``template.render(**values)``; errors propagate as raised."""
    return "".join(template.root_render_func(new_context(template, base, values)))
