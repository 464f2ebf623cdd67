"""The metrics' names, the reference table in docs/operating.md, and the Grafana dashboard agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from conveyor import metrics
from conveyor.api.metrics import QUEUE_METRICS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "conveyor.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _defined() -> dict[str, str]:
    """Every metric ``conveyor.metrics`` defines, by its exposed family name, with its type."""
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if value._type == "counter" else "")
            found[name] = value._type
    found.update(dict.fromkeys(QUEUE_METRICS, "gauge"))
    return found


def _series() -> set[str]:
    """Every series name a query may use."""
    out = set()
    for name, kind in _defined().items():
        base = name.removesuffix("_total")
        out |= {base + s for s in SUFFIXES[kind]}
    return out


def test_names_follow_the_naming_guide() -> None:
    defined = _defined()
    assert len(defined) >= 20
    for name, kind in defined.items():
        assert re.fullmatch(r"conveyor_[a-z][a-z0-9_]*[a-z0-9]", name), name
        assert name.endswith("_total") == (kind == "counter"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name


def test_every_metric_is_in_the_reference_table() -> None:
    text = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `(conveyor_[a-z0-9_]+)` \| (\w+) \|", text, re.MULTILINE))
    assert table == set(_defined().items())


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    series = _series()
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\bconveyor_[a-z0-9_]+", expr))
        assert names, expr
        assert names <= series, (expr, names - series)
        used |= names
    titles = " / ".join(p["title"].lower() for p in dashboard["panels"])
    for wanted in (
        "by status",
        "failure rate",
        "trigger to start",
        "queue depth",
        "oldest due",
        "worker slots",
        "http p99",
    ):
        assert wanted in titles, wanted
    assert {
        "conveyor_trigger_to_start_seconds_bucket",
        "conveyor_queue_depth",
        "conveyor_http_request_duration_seconds_bucket",
        "conveyor_worker_slots_busy",
    } <= used


def test_dashboard_panels_have_unique_ids() -> None:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
