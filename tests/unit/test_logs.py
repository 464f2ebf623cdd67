"""The logging setup: formats, bound fields, request ids (conveyor.logs and .api.request_log)."""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
from collections.abc import Iterator

import pytest

from conveyor import logs
from conveyor.api.request_log import request_id_of


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger writing through a handler of the test's own (formatter set per test)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("conveyor.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out, handler
    logger.removeHandler(handler)


def test_a_json_line_carries_request_and_bound_fields_and_its_own(lines: tuple) -> None:
    logger, out, handler = lines
    handler.setFormatter(logs.JsonFormatter())
    token = logs.request_scope({"request_id": "r1"})
    try:
        logs.note(tenant_id="t1")
        with logs.bound(run_id="run1", step_key="a", attempt=2):
            logger.warning("hello %s", "world", extra={"data": {"status": "failed"}})
        logger.info("after")
    finally:
        logs.end_request_scope(token)
    logger.info("outside")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "hello world"
    assert first["level"] == "WARNING"
    assert first["logger"] == "conveyor.test_logs"
    assert first["ts"].endswith("Z")
    assert {k: first[k] for k in ("request_id", "tenant_id", "run_id", "step_key", "attempt")} == {
        "request_id": "r1",
        "tenant_id": "t1",
        "run_id": "run1",
        "step_key": "a",
        "attempt": 2,
    }
    assert first["status"] == "failed"
    assert "run_id" not in second  # the binding ended with its block
    assert second["tenant_id"] == "t1"
    assert set(third) == {"ts", "level", "logger", "msg"}


def test_a_field_cannot_overwrite_the_message(lines: tuple) -> None:
    logger, out, handler = lines
    handler.setFormatter(logs.JsonFormatter())
    with logs.bound(msg="forged", level="DEBUG"):
        logger.error("real")
    line = json.loads(out.getvalue())
    assert line["msg"] == "real"
    assert line["level"] == "ERROR"


def test_an_exception_is_one_json_line(lines: tuple) -> None:
    logger, out, handler = lines
    handler.setFormatter(logs.JsonFormatter())
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("failed")
    (line,) = out.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_the_console_format_puts_the_fields_after_the_message(lines: tuple) -> None:
    logger, out, handler = lines
    handler.setFormatter(logs.ConsoleFormatter())
    with logs.bound(run_id="run1"):
        logger.info("ended", extra={"data": {"status": "failed"}})
    assert (
        out.getvalue().rstrip().endswith("INFO conveyor.test_logs: ended run_id=run1 status=failed")
    )


@pytest.mark.parametrize(
    ("command", "setting", "tty", "expected"),
    [
        ("serve", None, False, "json"),
        ("worker", None, False, "json"),
        ("serve", None, True, "console"),
        ("dev", None, False, "console"),
        ("cli", None, False, "console"),
        ("dev", "json", True, "json"),
        ("worker", "console", False, "console"),
    ],
)
def test_the_default_format(
    monkeypatch: pytest.MonkeyPatch, command: str, setting: str | None, tty: bool, expected: str
) -> None:
    monkeypatch.setattr(logs, "_isatty", lambda: tty)
    assert logs.default_format(command, setting) == expected


@pytest.mark.parametrize(
    "sent",
    [
        b"trace-abc.123",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"a:b_c",
    ],
)
def test_a_safe_request_id_is_kept(sent: bytes) -> None:
    assert request_id_of([(b"x-request-id", sent)]) == sent.decode()


@pytest.mark.parametrize(
    "sent",
    [b"", b"a b", b'a"b', b"a\\nb", b"x" * 129, "é".encode(), b"a\x00b", b"{json}"],
)
def test_a_hostile_request_id_is_replaced(sent: bytes) -> None:
    got = request_id_of([(b"x-request-id", sent)])
    assert got != sent.decode("latin-1")
    assert len(got) == 36


def test_without_a_request_id_one_is_made() -> None:
    assert request_id_of([]) != request_id_of([])


def test_a_call_in_context_carries_its_fields_into_another_thread(lines: tuple) -> None:
    logger, out, handler = lines
    handler.setFormatter(logs.JsonFormatter())

    def work() -> int:
        logger.info("in a thread")
        return 7

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(logs.in_context(work, tenant_id="t9")).result() == 7
        pool.submit(work).result()
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["tenant_id"] == "t9"
    assert "tenant_id" not in second  # the thread's context is left as it was
