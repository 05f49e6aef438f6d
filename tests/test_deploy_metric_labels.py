"""The alert rules and the Grafana dashboard against the metrics as the code registers them, labels
included. tests/test_alert_rules.py holds metric names to a list written in the test; this reads
the names, types and label names from prometheus_client's registry after importing the modules that
define them (api/app.py, api/ops_metrics.py, worker/metrics.py), so a renamed metric or label in the
code fails here, and checks every label an expression selects, groups or joins on, every
`$labels.X` an alert's text uses and every `{{X}}` a panel's legend uses."""

from __future__ import annotations

import importlib
import json
import re
from functools import cache
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.test_alert_rules import ALERTS, DASHBOARD

SELECTOR = re.compile(r"\b(roomfit_[a-z_]+)\s*(?:\{([^}]*)\})?")
MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
ALERT_LABEL = re.compile(r"\$labels\.(\w+)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
HISTOGRAM_SERIES = {"_bucket": {"le"}, "_sum": set(), "_count": set()}


@cache
def exported() -> dict[str, frozenset[str]]:
    """Every series name roomfit exports -> its label names: the metrics api/app.py and
    worker/metrics.py register at import, and the gauges api/ops_metrics.py's collector describes
    (it is registered when an app is made)."""
    for module in ("api.app", "worker.metrics"):
        importlib.import_module(module)
    from api.ops_metrics import OpsCollector

    metrics = [c for c in REGISTRY._collector_to_names if hasattr(c, "_labelnames")]  # type: ignore[attr-defined]
    families = [(m._name, m._type, m._labelnames) for m in metrics]
    families += [(f.name, f.type, f._labelnames) for f in OpsCollector().describe()]  # type: ignore[attr-defined]
    series: dict[str, frozenset[str]] = {}
    for name, kind, label_names in families:
        if not name.startswith("roomfit_"):
            continue
        labels = frozenset(label_names)
        if kind == "counter":
            series[f"{name.removesuffix('_total')}_total"] = labels
        elif kind == "histogram":
            for suffix, extra in HISTOGRAM_SERIES.items():
                series[f"{name}{suffix}"] = labels | extra
        else:
            series[name] = labels
    return series


def problems(expr: str) -> list[str]:
    """Unknown metrics, and labels that no metric of the expression has."""
    found: list[str] = []
    used: set[str] = set()
    for name, matchers in SELECTOR.findall(expr):
        if name not in exported():
            found.append(f"unknown metric {name}")
            continue
        used.add(name)
        for label in MATCHER_LABEL.findall(matchers):
            if label not in exported()[name]:
                found.append(f"{name} has no label {label}")
    available = set().union(*(exported()[n] for n in used)) if used else set()
    for group in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in available:
                found.append(f"no metric of the expression has label {label}")
    return found


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _targets() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _result_labels(expr: str) -> set[str]:
    """Labels an expression's result may carry: those it groups by, else its metrics' own."""
    groups = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    if groups:
        return {label.strip() for group in groups for label in group.split(",") if label.strip()}
    names = [n for n, _ in SELECTOR.findall(expr) if n in exported()]
    return set().union(*(exported()[n] for n in names)) if names else set()


def test_the_registry_holds_every_family() -> None:
    assert {"roomfit_jobs_total", "roomfit_queue_depth", "roomfit_http_request_seconds_bucket"} <= set(
        exported()
    )
    assert exported()["roomfit_jobs_total"] == {"kind", "status"}
    assert exported()["roomfit_queue_depth"] == {"queue"}


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_each_alert_selects_and_names_real_labels(rule: dict[str, Any]) -> None:
    assert problems(rule["expr"]) == []
    text = " ".join(str(v) for v in rule["annotations"].values())
    missing = set(ALERT_LABEL.findall(text)) - _result_labels(rule["expr"])
    assert not missing, f"{rule['alert']}: the alert's series carry no {missing}"


def test_each_panel_selects_and_names_real_labels() -> None:
    targets = _targets()
    assert targets
    for target in targets:
        assert problems(target["expr"]) == [], target["expr"]
        legend = target.get("legendFormat", "")
        missing = set(LEGEND_LABEL.findall(legend)) - _result_labels(target["expr"])
        assert not missing, f"{target['expr']}: the legend names {missing}"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sum(rate(roomfit_jobs_totl[5m]))", "unknown metric roomfit_jobs_totl"),
        ('roomfit_queue_depth{kind="preview"} > 0', "roomfit_queue_depth has no label kind"),
        ("sum by (queue) (rate(roomfit_jobs_total[5m]))", "no metric of the expression has label queue"),
        ("roomfit_adapter_swap_seconds_bucket{result='hit'}", "has no label result"),
    ],
)
def test_the_check_catches(expr: str, expected: str) -> None:
    assert any(expected in p for p in problems(expr)), problems(expr)
