"""The bounded evaluator: every expression and template a user stores runs here.

Expressions (``filter``, ``condition``, ``match``, ``audience``, concurrency
keys), step settings and message templates are Jinja2, evaluated by the engine,
the API and the dry-run simulator. A tenant must not be able to hold a CPU,
a lock or much memory with them, so all of it runs in one sandboxed
environment (Jinja's ``ImmutableSandboxedEnvironment``, plus what follows)
and under a **budget** (``Budget``), the bounds of one unit of work: one step
attempt, one message, one trigger.

- **Time.** A budget's deadline is in CPU seconds of the evaluating thread
  (``time.thread_time``), so a busy machine does not make a slow evaluation of
  a fast one. Jinja has no ``while``: template code spends time only in loops,
  calls and filters, and straight-line code is bounded by the source's size.
  Each loop iteration (every ``{% for %}`` iterates through a guard), call,
  filter, test and value built ticks the budget, and every 32 ticks the clock is
  read (``CpuLimit``: the CPU clock only once the wall clock says it may
  matter); a single operation is bounded by the size limits below, so evaluation
  stops within one operation of its deadline. No trace function: ordinary
  expressions pay a few counter increments, not a function call per line.
- **Size of a value.** Every value built (by an operator, a filter, a call, a
  literal, output) is checked: its *expanded size* (characters of a string;
  for lists, tuples, dicts and namespaces, their elements and everything inside
  them, as ``str`` or JSON would write them out) is at most ``max_value``.
  Checking literals and results this way means no value can be a small graph
  that expands exponentially when printed, compared or stored (``[x, x]``
  nested sixty times). Operations whose result can be much larger than their
  inputs (``*``, ``**``, ``%``, ``str.format``, ``join``, ``replace``,
  ``expandtabs``, padding widths, ``~`` and output buffers) are checked
  *before* they run (``conveyor.domain.sandbox_filters``).
- **Memory in all.** The shallow sizes of everything built under one budget
  add up to at most ``max_alloc``, which bounds what can be alive at once.
- **Compilation never evaluates.** Jinja's optimizer is off and output is
  finalized with the context, so no constant is folded at compile time (the
  API compiles every definition it saves). Sources are capped at
  ``max_source`` characters; compiled code is cached, and the cache is bounded
  in estimated bytes.

This module is pure: no I/O, no database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from functools import wraps
from types import NoneType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from conveyor.domain.cpu import CpuLimit
from conveyor.domain.errors import ExpressionError, ExpressionTimeout, ExpressionTooLarge
from conveyor.domain.jinja_context import globals_of


@dataclass(frozen=True)
class Limits:
    """The bounds of one budget. Sizes are in *units*: characters, or elements."""

    timeout: float = 1.0  # CPU seconds of the evaluating thread
    max_value: int = 1_048_576  # expanded size of any one value built
    max_alloc: int = 8 * 1_048_576  # shallow sizes of everything built, added up
    max_source: int = 16_384  # characters of one expression or template


_defaults = Limits()


def configure(limits: Limits) -> None:
    """Set the process's default limits (from settings, at start-up)."""
    global _defaults
    _defaults = limits


def default_limits() -> Limits:
    """The process's default limits."""
    return _defaults


ErrorFactory = Callable[[str], Exception]
_CONTAINERS = (list, tuple, dict, set, frozenset)
_SCALARS = (bool, float, NoneType)
_SEQUENCES = frozenset({list, tuple})  # what `+` joins into a new container
# Nesting deeper than this is refused when a value's size is measured: nothing
# an automation needs, and it keeps the walk (and str, repr, JSON) off the C stack.
MAX_DEPTH = 200


class Budget:
    """What one unit of work may still spend: CPU time, and units built."""

    __slots__ = (
        "_memo",
        "allocated",
        "cpu",
        "field",
        "limits",
        "ticks",
        "timeout_error",
        "too_large_error",
    )

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        timeout_error: ErrorFactory = ExpressionTimeout,
        too_large_error: ErrorFactory = ExpressionTooLarge,
        deadline: float | None = None,
    ) -> None:
        self.limits = limits or _defaults
        # Created in the thread that evaluates: CPU time is per thread.
        # ``deadline`` (a thread_time value) can only make it sooner.
        self.cpu = CpuLimit(self.limits.timeout, deadline)
        self.allocated = 0
        self.ticks = 0
        self.timeout_error = timeout_error
        self.too_large_error = too_large_error
        self.field: str | None = None  # the part being rendered, for messages
        # id -> (container, expanded size, height); the container is kept so its id is
        # not reused while it is remembered.
        self._memo: dict[int, tuple[Any, int, int]] = {}

    # -- time -------------------------------------------------------------
    def tick(self) -> None:
        """One more loop iteration, call or operation: look at the clock now and then."""
        self.ticks += 1
        if not self.ticks & 31:
            self.check_time()

    def check_time(self) -> None:
        """Raise the timeout error if the deadline has passed."""
        if self.cpu.passed():
            raise self.timeout_error(
                f"evaluation took longer than its limit of {self.limits.timeout:g} s of CPU"
            )

    # -- size -------------------------------------------------------------
    def too_large(self, what: str) -> Exception:
        """The error for ``what`` being over the size limit."""
        return self.too_large_error(
            f"{what} is over the limit of {self.limits.max_value:,} characters or elements"
        )

    def expanded(self, value: Any, what: str = "a value") -> int:
        """The size ``value`` would have written out; raises once over ``max_value``.

        Also refuses a value nested more than ``MAX_DEPTH`` deep (its height is
        remembered with its size, so a chain built one level at a time is caught).
        """
        if isinstance(value, str | bytes):
            return len(value)
        if not isinstance(value, _CONTAINERS) and not isinstance(value, Namespace):
            return 1
        return self._walk(value, what)[0]

    def _walk(self, value: Any, what: str) -> tuple[int, int]:
        """``(expanded size, height)`` of a container, from what is remembered where possible."""
        if isinstance(value, Namespace):
            children: Any = value._Namespace__attrs.values()
            total = 1
        else:
            known = self._memo.get(id(value))
            if known is not None and known[0] is value:
                return known[1], known[2]
            children = (*value.keys(), *value.values()) if isinstance(value, dict) else value
            total = len(value)
        limit = self.limits.max_value
        height = 0
        for item in children:
            if isinstance(item, str | bytes):
                total += len(item)
            elif isinstance(item, _CONTAINERS) or isinstance(item, Namespace):
                size, below = self._walk(item, what)
                total += size
                height = max(height, below)
            else:
                total += 1
            if total > limit:
                raise self.too_large(what)
        height += 1
        if height > MAX_DEPTH:
            raise self.too_large_error(f"a value is nested more than {MAX_DEPTH} levels deep")
        if not isinstance(value, Namespace):  # namespaces change: never remembered
            self._memo[id(value)] = (value, total, height)
        return total, height

    def check_width(self, width: Any, what: str) -> None:
        """Refuse a width, count or padding argument that alone is over the limit."""
        if isinstance(width, int) and not isinstance(width, bool):
            if width > self.limits.max_value:
                raise self.too_large(f"a width given to {what}")

    def expect(self, units: int, what: str) -> None:
        """Refuse, before it runs, an operation whose result would have ``units``."""
        if units > self.limits.max_value:
            raise self.too_large(what)

    def built(self, value: Any, what: str = "a value") -> Any:
        """A value was just built: check its size, count it, hand it back."""
        self.tick()
        if isinstance(value, str | bytes):
            size = shallow = len(value)
        elif isinstance(value, _SCALARS):
            return value
        elif isinstance(value, int):
            # Repeated squaring makes numbers that take long to compute or print.
            if value.bit_length() > self.limits.max_value:
                raise self.too_large(what)
            return value
        elif isinstance(value, _CONTAINERS) or isinstance(value, Namespace):
            size = self.expanded(value, what)
            shallow = len(value) if not isinstance(value, Namespace) else 1
        else:
            return value
        if size > self.limits.max_value:
            raise self.too_large(what)
        self.count(shallow)
        return value

    def concatenated(self, value: list[Any] | tuple[Any, ...], left: Any, right: Any) -> Any:
        """``left + right`` of two sequences was just built: check it from its parts.

        The parts' sizes are remembered, so a list grown one item at a time in a
        loop costs the new item, not a walk over everything built so far.
        """
        self.tick()
        size_l, height_l = self._walk(left, "a value")
        size_r, height_r = self._walk(right, "a value")
        total = size_l + size_r
        if total > self.limits.max_value:
            raise self.too_large("a value")
        self._memo[id(value)] = (value, total, max(height_l, height_r))
        self.count(len(value))
        return value

    def count(self, units: int) -> None:
        """Add ``units`` to what this budget built; raise once over ``max_alloc``."""
        self.allocated += units
        if self.allocated > self.limits.max_alloc:
            raise self.too_large_error(
                f"evaluation built more than {self.limits.max_alloc:,} characters or elements"
            )


_current: ContextVar[Budget | None] = ContextVar("conveyor_budget", default=None)


def current() -> Budget:
    """The budget in force; outside one, a fresh budget with the default limits.

    Code that runs user code opens a budget (``budget`` or ``using``); the
    fallback only serves Jinja internals reached outside any (never user code).
    """
    return _current.get() or Budget()


def enter(limits: Limits | None = None) -> tuple[Budget, Token[Budget | None] | None]:
    """The budget in force, or a new one made the one in force; give the token to ``leave``.

    A plain pair of calls rather than a context manager: every evaluation
    passes here, and a generator-based ``with`` costs more than the evaluation
    of a short expression.
    """
    active = _current.get()
    if active is not None:
        return active, None
    fresh = Budget(limits)
    return fresh, _current.set(fresh)


def begin(limits: Limits | None = None) -> Token[Budget | None]:
    """Put a new budget in force (one unit of work: a step attempt); give the token to ``leave``."""
    return _current.set(Budget(limits))


def leave(token: Token[Budget | None] | None) -> None:
    """Undo ``enter`` (nothing to undo when it found a budget in force)."""
    if token is not None:
        _current.reset(token)


@contextmanager
def using(budget: Budget) -> Iterator[Budget]:
    """Make ``budget`` the one in force for this block (in this thread or task)."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


# -- the environment -----------------------------------------------------------


class _CodeGenerator(CodeGenerator):
    """Makes literals (``[a, b]``, ``(a, b)``, ``{k: v}``) pass the size check."""

    def _checked(self, write: Callable[[], None]) -> None:
        self.write("environment.built_literal(")
        write()
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._checked(lambda: super(_CodeGenerator, self).visit_List(node, frame))

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._checked(lambda: super(_CodeGenerator, self).visit_Dict(node, frame))

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target (`for a, b in ...`)
            super().visit_Tuple(node, frame)
        else:
            self._checked(lambda: super(_CodeGenerator, self).visit_Tuple(node, frame))


class _Template(Template):
    """Compiled code whose ``~`` joins are size-checked (Jinja imports them by name)."""

    @classmethod
    def _from_namespace(cls, environment: Any, namespace: Any, globals: Any) -> Any:
        namespace["str_join"] = environment.checked_str_join
        namespace["markup_join"] = environment.checked_markup_join
        return super()._from_namespace(environment, namespace, globals)


LOOP_GUARD = "conveyor_loop_guard"


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every ``{{ ... }}`` output passes here before it becomes text.

    Taking the context also stops Jinja from folding constant output at
    compile time, which would run user code while compiling.
    """
    budget = current()
    budget.tick()
    if isinstance(value, str):
        budget.count(len(value))
    elif isinstance(value, _CONTAINERS) or isinstance(value, Namespace):
        budget.count(budget.expanded(value))
    return value


def _ticking(test: Any) -> Any:
    @wraps(test)  # keeps a pass_environment / pass_context marker
    def ticked(*args: Any, **kwargs: Any) -> Any:
        current().tick()
        return test(*args, **kwargs)

    return ticked


def _guard_loop(value: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: each iteration ticks the budget."""
    budget = current()
    for item in value:
        budget.tick()
        yield item


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the bounds described in the module docstring."""

    code_generator_class = _CodeGenerator
    template_class = _Template
    # The operators that can grow a value; the others work on numbers alone.
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            undefined=StrictUndefined, autoescape=autoescape, optimized=False, finalize=_finalize
        )
        # Imported here: the filters module builds on this one's budget.
        from conveyor.domain.sandbox_filters import bounded_filters

        self.filters = bounded_filters(self.filters)
        self.filters[LOOP_GUARD] = _guard_loop
        # Filters such as `select` run a test per item, in plain Python: each
        # test ticks, so `range(100000)|select('in', long_list)` meets the deadline.
        self.tests = {name: _ticking(test) for name, test in self.tests.items()}
        self.globals.pop("lipsum", None)  # makes text of any size

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, LOOP_GUARD, [], [], None, None, lineno=loop.lineno)
        return tree

    # Hooks of the sandbox: everything template code does that costs time or memory.
    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Check an operator's result size before (``*``, ``**``, ``%``) and after."""
        from conveyor.domain.sandbox_filters import precheck_binop

        budget = current()
        precheck_binop(budget, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if operator == "+" and type(result) in _SEQUENCES and type(left) is type(right):
            return budget.concatenated(result, left, right)
        return budget.built(result)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Check a call's arguments (widths, methods that multiply) and its result."""
        from conveyor.domain.sandbox_filters import precheck_call

        budget = current()
        args = precheck_call(budget, __obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return budget.built(result, "the result of a call")

    def getitem(self, obj: Any, argument: Any) -> Any:
        """A slice builds a value: it is counted."""
        value = super().getitem(obj, argument)
        return current().built(value) if isinstance(argument, slice) else value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``format_map`` through a formatter that counts what it writes."""
        from conveyor.domain.sandbox_filters import bounded_str_format

        wrapped = super().wrap_str_format(value)
        return None if wrapped is None else bounded_str_format(self, value)

    def built_literal(self, value: Any) -> Any:
        """A list, tuple or dict written in the source."""
        return current().built(value, "a literal")

    def concat(self, pieces: list[str]) -> str:  # type: ignore[override]
        """Join a buffer (a macro's, ``{% set %}...{% endset %}``'s), size-checked first."""
        budget = current()
        total = sum(map(len, pieces))
        budget.expect(total, "the text of a block")
        budget.count(total)
        return "".join(pieces)

    def checked_str_join(self, seq: Any) -> str:
        """``a ~ b``: each part is made text in turn, the total checked as it grows."""
        return self._join(seq, str)

    def checked_markup_join(self, seq: Any) -> str:
        """``a ~ b`` with autoescape on."""
        from markupsafe import Markup, escape, soft_str

        if any(hasattr(arg, "__html__") for arg in seq):
            return Markup(self._join(seq, lambda v: str(escape(v))))
        return self._join(seq, soft_str)

    def _join(self, seq: Any, to_text: Callable[[Any], str]) -> str:
        budget = current()
        parts: list[str] = []
        total = 0
        for arg in seq:
            budget.expanded(arg)  # a container is measured before str() writes it out
            text = to_text(arg)
            total += len(text)
            budget.expect(total, "a joined string (`~`)")
            parts.append(text)
        return str(budget.built("".join(parts)))


TEXT_ENV = BoundedEnvironment(autoescape=False)
HTML_ENV = BoundedEnvironment(autoescape=True)


# -- compiling, with a cache bounded in bytes ----------------------------------

# A compiled template's size, estimated from its source: Jinja's generated
# Python is a few times longer than the source, and code objects add some.
_BYTES_PER_CHAR = 8
_BYTES_PER_ENTRY = 4096
CACHE_BYTES = 32 * 1024 * 1024


class _CompileCache:
    """Compiled expressions and templates; the oldest go first once over ``max_bytes``.

    Reads take no lock (a dict lookup is atomic under the GIL) and do not
    reorder: the hot path is a hit.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[tuple[str, str], tuple[Template, dict[str, Any]]] = {}
        self._lock = threading.Lock()  # API request threads and worker threads share it

    @staticmethod
    def cost(source: str) -> int:
        return len(source) * _BYTES_PER_CHAR + _BYTES_PER_ENTRY

    def get(self, key: tuple[str, str]) -> tuple[Template, dict[str, Any]] | None:
        return self._entries.get(key)

    def put(self, key: tuple[str, str], value: tuple[Template, dict[str, Any]]) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self.bytes += self.cost(key[1])
            while self.bytes > self.max_bytes and self._entries:
                old = next(iter(self._entries))  # dicts keep insertion order
                del self._entries[old]
                self.bytes -= self.cost(old[1])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


_cache = _CompileCache(CACHE_BYTES)


def check_source(source: str, what: str, max_source: int | None = None) -> None:
    """Refuse a source over ``max_source`` characters (default: the process's limit)."""
    cap = _defaults.max_source if max_source is None else max_source
    if len(source) > cap:
        raise ExpressionTooLarge(f"{what} is {len(source):,} characters, over the limit of {cap:,}")


def compiled(
    kind: str, source: str, max_source: int | None = None
) -> tuple[Template, dict[str, Any]]:
    """``source`` compiled as ``kind`` (expression, text or html), with its globals.

    Raises:
        ExpressionTooLarge: the source is over ``max_source`` (default: the
            process's ``Limits.max_source``).
        ExpressionError: it does not compile (the message says why).
    """
    what = "the expression" if kind == "expression" else "the template"
    check_source(source, what, max_source)
    key = (kind, source)
    found = _cache.get(key)
    if found is not None:
        return found
    try:
        if kind == "expression":
            # The template that assigns `result` (TemplateExpression keeps it private):
            # rendered with a context built once per template (jinja_context).
            template: Template = TEXT_ENV.compile_expression(
                source, undefined_to_none=False
            )._template
        else:
            template = (HTML_ENV if kind == "html" else TEXT_ENV).from_string(source)
    except (TemplateError, SecurityError) as exc:
        raise ExpressionError(f"bad {kind} {_clip(source)!r}: {exc}") from exc
    except (RecursionError, MemoryError, SyntaxError) as exc:
        # Python's parser and Jinja's give up on very deep nesting.
        raise ExpressionError(f"bad {kind} {_clip(source)!r}: nested too deeply") from exc
    value = (template, globals_of(template))
    _cache.put(key, value)
    return value


def _clip(source: str, limit: int = 200) -> str:
    """A source as quoted in an error message: long ones are cut."""
    return source if len(source) <= limit else source[:limit] + "…"


def clear_cache() -> None:
    """Forget every compiled template (tests)."""
    _cache.clear()


def cache_bytes() -> int:
    """The compile cache's estimated size in bytes."""
    return _cache.bytes
