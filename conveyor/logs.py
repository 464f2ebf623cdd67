"""The one logging setup: the standard library, with a JSON or a console formatter.

Every process configures it once (``configure``): the CLI's root callback, then
``serve``, ``worker`` and ``dev`` again with their own default format. uvicorn's
loggers have no handlers of their own here, so its lines go through the same
root handler and come out in the same format.

Fields that say which request, tenant, run, step and attempt a line is about
are kept in context variables, not passed to each call: ``bind`` (copy on
write, for the worker's rounds and attempts) and ``request_scope`` (one
mutable dict per HTTP request, so a dependency running in a thread pool can
add the tenant once it has authenticated the caller). The formatter adds them
to every line written in that context. Binding costs a context-variable set
and a small dict; nothing is formatted unless a line is written.

A line may carry its own fields as ``extra={"data": {...}}``. Never put a
secret, a key or a payload body in a line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

LogFormat = Literal["json", "console"]
T = TypeVar("T")

_bound: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "conveyor_log_fields", default=None
)
_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "conveyor_log_request", default=None
)


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any] | None]:
    """Add ``fields`` to every line logged in this context until ``unbind``."""
    return _bound.set({**(_bound.get() or {}), **fields})


def unbind(token: contextvars.Token[Mapping[str, Any] | None]) -> None:
    """Undo the ``bind`` that returned ``token``."""
    _bound.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """``bind`` for the length of a ``with`` block."""
    token = bind(**fields)
    try:
        yield
    finally:
        _bound.reset(token)


def in_context(fn: Callable[[], T], **fields: Any) -> Callable[[], T]:
    """``fn`` made to run with ``fields`` bound, in whichever thread calls it."""

    def call() -> T:
        with bound(**fields):
            return fn()

    return call


def request_scope(fields: dict[str, Any]) -> contextvars.Token[dict[str, Any] | None]:
    """Make ``fields`` (mutable) the current request's: ``note`` adds to it, lines carry it."""
    return _request.set(fields)


def end_request_scope(token: contextvars.Token[dict[str, Any] | None]) -> None:
    """Leave the request scope ``request_scope`` entered."""
    _request.reset(token)


def note(**fields: Any) -> None:
    """Add ``fields`` to the current request's (no-op outside a request).

    The dict is shared by every context copied from the request's, so a
    dependency run in a thread pool reaches the access line too.
    """
    current = _request.get()
    if current is not None:
        current.update(fields)


def context_fields() -> dict[str, Any]:
    """The fields a line written now would carry (request's, then bound)."""
    request, bound_ = _request.get(), _bound.get()
    fields = dict(request) if request else {}
    if bound_:
        fields.update(bound_)
    return fields


def run_fields(run: Mapping[str, Any]) -> dict[str, Any]:
    """The fields naming a run (and its tenant) in a line."""
    return {"tenant_id": str(run["tenant_id"]), "run_id": str(run["id"])}


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = context_fields()
    data = record.__dict__.get("data")
    if isinstance(data, Mapping):
        fields.update(data)
    return fields


def _timestamp(created: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the context's fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields_of(record).items():
            line.setdefault(key, value)  # the four fields above are never overwritten
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The message line, with the context's fields after it."""
        text = super().formatMessage(record)
        fields = _fields_of(record)
        if not fields:
            return text
        return text + " " + " ".join(f"{k}={v}" for k, v in fields.items())


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    Looking it up late keeps logging working when stderr is swapped (tests).
    """

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def default_format(command: str, setting: str | None) -> LogFormat:
    """The format a command logs in: the setting if given, else by command and terminal.

    ``dev`` (a person is watching) and any process whose stderr is a terminal
    log for people; ``serve`` and ``worker`` otherwise log JSON for a pipeline.
    """
    if setting in ("json", "console"):
        return setting  # type: ignore[return-value]
    if command == "dev" or _isatty():
        return "console"
    return "json" if command in ("serve", "worker") else "console"


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


def configure(level: str | None, fmt: LogFormat = "console") -> None:
    """Send every log line to stderr in ``fmt`` (stdout is for results); once per process.

    Called again, it replaces the format (and the level unless ``level`` is
    None): the root callback runs before a command knows its own default.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    if level is not None:
        root.setLevel(level.upper())
    # uvicorn's loggers write through the root handler, in the same format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
