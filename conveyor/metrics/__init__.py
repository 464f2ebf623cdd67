"""Prometheus metrics: every metric Conveyor exports, defined once, here.

Names follow the Prometheus naming guide: a ``conveyor_`` prefix, the unit in
the name (``_seconds``), ``_total`` on counters. Labels carry only values the
operator or the code chooses (statuses, step types, kinds, channels, route
templates), never a tenant's names, so the number of series stays bounded; the
one exception is the ``automation`` label of the run metrics, which holds the
automation's name only with ``CONVEYOR_METRICS_AUTOMATION_LABEL=true`` and is
empty otherwise (an empty label is the same as no label to PromQL).

**Multiprocess mode.** With ``PROMETHEUS_MULTIPROC_DIR`` set (before the
process starts: ``prometheus_client`` reads it on import), every process
writes its values to files in that directory and a scrape of any of them
aggregates them all (``registry()``); without it, each process has its own
in-memory registry. See docs/operating.md ("Metrics").

This module imports nothing of Conveyor's, so every layer may count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # prometheus_client opens its files there as the metrics below are made:
    # a directory not made yet would stop every command with a traceback.
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

# Seconds, from a few milliseconds (an inline step, a start from a warm queue)
# up to the hours a run with waits may take.
_SHORT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_LONG = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
    86400.0,
)
_HTTP = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- runs and steps (recorded by the worker when a round commits) -------------
RUNS_STARTED = Counter(
    "conveyor_runs_started_total",
    "Runs that started executing (pending to running).",
    ["automation"],
)
RUNS_FINISHED = Counter(
    "conveyor_runs_finished_total",
    "Runs that ended, by final status.",
    ["status", "automation"],
)
RUN_DURATION = Histogram(
    "conveyor_run_duration_seconds",
    "From a run's start to its end, by final status.",
    ["status", "automation"],
    buckets=_LONG,
)
TRIGGER_TO_START = Histogram(
    "conveyor_trigger_to_start_seconds",
    "From a run's creation (its trigger firing) to its start by a worker.",
    ["automation"],
    buckets=_SHORT,
)
STEP_ATTEMPTS = Counter(
    "conveyor_step_attempts_total",
    "Step attempts that ended, by step type and outcome (the attempt's status).",
    ["step_type", "outcome"],
)
ATTEMPT_DURATION = Histogram(
    "conveyor_step_attempt_duration_seconds",
    "Duration of step attempts that ended, by step type.",
    ["step_type"],
    buckets=_SHORT,
)
# -- the queue and the workers ------------------------------------------------
LEASE_LOSSES = Counter(
    "conveyor_lease_losses_total", "Tasks whose lease a worker found lost when it committed."
)
TASKS_POISONED = Counter(
    "conveyor_tasks_poisoned_total",
    "Runs set aside as poisoned: their task was lost too many times in a row.",
)
SLOTS_BUSY = Gauge(
    "conveyor_worker_slots_busy",
    "Tasks held by workers now.",
    multiprocess_mode="livesum",
)
SLOTS_TOTAL = Gauge(
    "conveyor_worker_slots",
    "Slots of running workers (CONVEYOR_WORKER_CONCURRENCY each).",
    multiprocess_mode="livesum",
)
DRY_RUN_DAYS = Counter(
    "conveyor_dry_run_days_total",
    "Dry-run day tasks a worker finished, by outcome (done, lease_lost, failed).",
    ["outcome"],
)
DATABASE_ERRORS = Counter(
    "conveyor_database_errors_total",
    "Database errors waited out or answered 503: by operation and kind (unavailable, aborted).",
    ["operation", "kind"],
)
DATABASE_RETRIES = Counter(
    "conveyor_database_retries_total",
    "Work tried again at once because the database aborted its transaction (a deadlock).",
    ["operation"],
)
# -- inputs and outputs -------------------------------------------------------
EVENTS_INGESTED = Counter(
    "conveyor_events_ingested_total",
    "Events received, by outcome (accepted, duplicate, rejected).",
    ["outcome"],
)
MESSAGES = Counter(
    "conveyor_messages_total",
    "Messages handed to a provider, by channel (email, push) and outcome (sent, failed).",
    ["channel", "outcome"],
)
# -- HTTP ---------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "conveyor_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "conveyor_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of the body), by method and route template.",
    ["method", "route"],
    buckets=_HTTP,
)
RATE_LIMITED = Counter(
    "conveyor_http_rate_limited_total",
    "Requests refused with 429, by limit (key, auth).",
    ["limit"],
)


class _Options:
    automation_label = False


_options = _Options()


def configure(*, automation_label: bool) -> None:
    """Set this process's options (``serve``, ``worker`` and ``dev`` call it at start)."""
    _options.automation_label = automation_label


def automation(name: str) -> str:
    """The ``automation`` label's value for ``name``: empty unless the label is enabled."""
    return name if _options.automation_label else ""


def multiprocess_dir() -> str | None:
    """The multiprocess directory, when multiprocess mode is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process."""
    if multiprocess_dir() is None:
        return REGISTRY
    # A fresh registry per scrape, as prometheus_client's docs ask: the
    # collector reads the directory each time.
    fresh = CollectorRegistry()
    multiprocess.MultiProcessCollector(fresh)  # type: ignore[no-untyped-call]
    return fresh


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text a scrape answers: ``registry()``, then the ``extra`` collectors."""
    text = generate_latest(registry())
    more = list(extra)
    if more:
        # Their own registry: collectors computed per scrape (the queue) must
        # not be registered in the process-wide one, twice in tests.
        own = CollectorRegistry(auto_describe=False)
        for collector in more:
            own.register(collector)
        text += generate_latest(own)
    return text


def process_exited(pid: int | None = None) -> None:
    """Drop a process's live gauges from the directory (this one's unless ``pid`` is given).

    A worker stopping cleanly drops its own; ``serve --processes`` those of
    its children that ended.
    """
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]
