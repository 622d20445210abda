"""deploy/grafana/dashboards/clawbus.json: every query names metrics (and labels) the
services export (clawbus_core.metrics), and the dashboard shows what operators need."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clawbus_core import metrics
from prometheus_client.metrics import MetricWrapperBase

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/clawbus.json"
# The sample names each metric type exposes, from its family name.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
# Labels Prometheus adds to every series (`le` is a histogram bucket's bound).
SERVER_LABELS = frozenset({"instance", "job", "le"})
# What the dashboard must show (issue 8): the metric behind each.
REQUIRED = (
    metrics.HTTP_REQUESTS,
    metrics.HTTP_DURATION,
    metrics.HTTP_ERRORS,
    metrics.CONNECTIONS_ACTIVE,
    metrics.RUNS_QUEUED,
    metrics.RUNS_ACTIVE,
    metrics.RUNS_FINISHED,
    metrics.MODEL_DURATION,
    metrics.MODEL_TTFT,
    metrics.MODEL_TOKENS,
    metrics.TOOL_CALLS,
    metrics.BUS_PENDING,
    metrics.BUS_REDELIVERIES,
    metrics.CHANNEL_MESSAGES,
    metrics.BROWSER_CONTEXTS,
    metrics.SCHEDULER_FIRINGS,
    metrics.SCHEDULER_LEADER,
)


def exported() -> dict[str, MetricWrapperBase]:
    """Every sample name the services expose -> the metric object behind it."""
    found: dict[str, MetricWrapperBase] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                for suffix in SUFFIXES[family.type]:
                    found[family.name + suffix] = value
    return found


def labels_of(metric: MetricWrapperBase) -> set[str]:
    names: tuple[str, ...] = metric._labelnames  # where prometheus_client keeps them
    return set(names)


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def test_every_metric_queried_exists(dashboard: dict[str, Any]) -> None:
    known = exported()
    found = queries(dashboard)
    assert found
    for title, expr in found:
        used = re.findall(r"\bclawbus_\w+", expr)
        assert used, f"{title}: queries no clawbus metric: {expr}"
        unknown = [name for name in used if name not in known]
        assert not unknown, f"{title}: {unknown} not in clawbus_core.metrics"


def test_every_label_queried_exists(dashboard: dict[str, Any]) -> None:
    known = exported()
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            allowed = set(SERVER_LABELS)
            for name in re.findall(r"\bclawbus_\w+", expr):
                allowed |= labels_of(known[name])
            grouped = {
                label.strip()
                for group in re.findall(r"\bby \(([^)]*)\)", expr)
                for label in group.split(",")
            }
            matched = {
                label
                for selector in re.findall(r"\{([^{}]*)\}", expr)
                for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector)
            }
            legend = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            for label in grouped | matched | legend:
                assert label in allowed, f"{panel['title']}: label {label!r} not on {expr}"


def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    used = {name for _, expr in queries(dashboard) for name in re.findall(r"\bclawbus_\w+", expr)}
    shown = {id(exported()[name]) for name in used}
    missing = [next(iter(m.describe())).name for m in REQUIRED if id(m) not in shown]
    assert not missing, missing


def test_layout_and_datasource(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
