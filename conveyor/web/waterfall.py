"""The run page's waterfall: a bar per attempt, queue delay apart from execution.

Positions are computed here, in percent of the run's span, and drawn as SVG
attributes (a ``style`` attribute would be refused by the page's CSP).
Queue delay is the time from when an attempt could start (its dependencies
done, or the previous attempt over: the retry backoff counts here) to when a
worker started it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MIN_WIDTH = 0.4  # percent: an instant attempt still shows as a sliver


@dataclass(frozen=True)
class Bar:
    """One segment of a step's row: ``kind`` is queue, run, failed, wait or reused."""

    kind: str
    x: float
    width: float
    label: str


@dataclass
class Row:
    """A step's row: its bars and the figures beside them."""

    key: str
    status: str
    bars: list[Bar] = field(default_factory=list)
    queue_seconds: float | None = None
    run_seconds: float | None = None


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _span(detail: dict[str, Any], now: datetime) -> tuple[datetime, float]:
    """The timeline's origin and its length in seconds (never zero)."""
    start = _at(detail["created_at"]) or now
    ends = [_at(detail["completed_at"])]
    for step in detail["steps"]:
        ends.append(_at(step["completed_at"]))
        ends += [_at(a["ended_at"]) or _at(a["started_at"]) for a in step["attempts"]]
    known = [e for e in ends if e is not None]
    end = max(known) if known else now
    if detail["completed_at"] is None:
        end = max(end, now)
    return start, max((end - start).total_seconds(), 0.001)


def _ready(step: dict[str, Any], done: dict[str, datetime | None], run_start: datetime) -> datetime:
    """When the step's first attempt could start: its dependencies all finished.

    A first step could start when the run was created: the run's own wait for
    a worker is queue delay too.
    """
    times = [done.get(dep.split(".", 1)[0]) for dep in step["depends_on"]]
    known = [t for t in times if t is not None]
    return max([run_start, *known])


def rows(detail: dict[str, Any], now: datetime) -> list[Row]:
    """One row per step of a run detail (``services.runs.get_run_detail``), in run order."""
    origin, span = _span(detail, now)
    done = {s["key"]: _at(s["completed_at"]) for s in detail["steps"]}

    def bar(kind: str, start: datetime, end: datetime, label: str) -> Bar:
        x = max(0.0, min(100.0, (start - origin).total_seconds() / span * 100))
        width = max(MIN_WIDTH, (end - start).total_seconds() / span * 100)
        return Bar(kind, round(x, 2), round(min(width, 100.0 - x + MIN_WIDTH), 2), label)

    out = []
    for step in detail["steps"]:
        row = Row(step["key"], str(step["status"]))
        previous_end = _ready(step, done, origin)
        queued = ran = 0.0
        for a in step["attempts"]:
            started = _at(a["started_at"])
            if started is None:
                continue
            ended = _at(a["ended_at"]) or now
            if started > previous_end:
                wait = (started - previous_end).total_seconds()
                queued += wait
                row.bars.append(bar("queue", previous_end, started, f"queued {wait:.3f} s"))
            kind = "failed" if a["status"] in ("failed", "timed-out", "timed_out") else "run"
            if a["ended_at"] is None and step["status"] == "waiting":
                kind = "wait"  # a parked delay or wait, not work being done
            took = (ended - started).total_seconds()
            ran += took
            row.bars.append(bar(kind, started, ended, f"attempt {a['attempt']}: {took:.3f} s"))
            previous_end = ended
        if not step["attempts"]:
            start, end = _at(step["started_at"]), _at(step["completed_at"])
            if step["reused_from"]:
                # Its times are the earlier run's: a mark at the start, not a bar.
                row.bars.append(bar("reused", origin, origin, "reused from an earlier run"))
            elif start is not None:
                row.bars.append(bar("wait", start, end or now, str(step["status"])))
        else:
            row.queue_seconds, row.run_seconds = round(queued, 3), round(ran, 3)
        out.append(row)
    return out
