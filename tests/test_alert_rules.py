"""The Prometheus alert rules (deploy/prometheus/alerts.yaml) and the Grafana dashboard
(deploy/grafana/roomfit.json) held to the metrics the code exports: every metric an expression
names is one the API or the workers export, the rule file has Prometheus's shape, durations parse,
severities are ours; and the dashboard draws every metric family. `promtool check rules` runs too
when promtool is on PATH (Debian: `apt-get install prometheus`); the checks here need no promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
SCRAPE = ROOT / "deploy" / "prometheus" / "scrape.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "roomfit.json"

# What the code exports (api/app.py, api/ops_metrics.py, the workers), by family name.
HISTOGRAMS = {
    "roomfit_http_request_seconds",
    "roomfit_job_duration_seconds",
    "roomfit_queue_wait_seconds",
    "roomfit_adapter_swap_seconds",
    "roomfit_training_step_seconds",
    "roomfit_preview_batch_size",
}
FAMILIES = HISTOGRAMS | {
    "roomfit_http_requests_total",
    "roomfit_jobs_total",
    "roomfit_adapter_cache_total",
    "roomfit_training_steps_total",
    "roomfit_queue_depth",
    "roomfit_queue_oldest_seconds",
    "roomfit_workers",
    "roomfit_webhook_deliveries_pending",
    "roomfit_ops_metrics_up",
    "roomfit_previews_expired_total",
    "roomfit_preview_expiry_errors_total",
    "roomfit_history_rows_expired_total",
}
KNOWN = FAMILIES | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_count", "_sum")}
SEVERITIES = {"critical", "warning", "info"}
RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}
ANNOTATIONS = {"summary", "description", "runbook"}
METRIC = re.compile(r"\broomfit_[a-z_]+")
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def _family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def unknown_metrics(expr: str) -> set[str]:
    return set(METRIC.findall(expr)) - KNOWN


def rule_problems(doc: Any) -> list[str]:
    """Everything wrong with a parsed rule file; empty when it is good."""
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list) or not doc["groups"]:
        return ["no `groups` list"]
    problems: list[str] = []
    for group in doc["groups"]:
        name = group.get("name") if isinstance(group, dict) else None
        rules = group.get("rules") if isinstance(group, dict) else None
        if not name or not isinstance(rules, list) or not rules:
            problems.append(f"group {name!r}: needs a name and rules")
            continue
        for rule in rules:
            problems += [f"{name}/{rule.get('alert', '?')}: {p}" for p in _alert_problems(rule)]
    return problems


def _alert_problems(rule: dict[str, Any]) -> list[str]:
    problems = [f"missing {key}" for key in sorted(RULE_KEYS - set(rule))]
    problems += [f"unknown key {key}" for key in sorted(set(rule) - RULE_KEYS)]
    expr = rule.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        problems.append("empty expr")
    else:
        problems += [f"unknown metric {m}" for m in sorted(unknown_metrics(expr))]
    if not DURATION.match(str(rule.get("for", ""))):
        problems.append(f"bad duration {rule.get('for')!r}")
    if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
        problems.append("severity not one of " + ", ".join(sorted(SEVERITIES)))
    problems += [f"no {a} annotation" for a in sorted(ANNOTATIONS - set(rule.get("annotations") or {}))]
    return problems


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def _alerts() -> dict[str, Any]:
    return yaml.safe_load(ALERTS.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_the_rule_file_is_good() -> None:
    doc = _alerts()
    assert rule_problems(doc) == []
    alerts = {rule["alert"] for group in doc["groups"] for rule in group["rules"]}
    assert len(alerts) == sum(len(g["rules"]) for g in doc["groups"]), "alert names repeat"


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    exprs = {r["alert"]: (r["expr"], r["for"]) for g in _alerts()["groups"] for r in g["rules"]}
    wanted = {
        "RoomfitPreviewQueueStalled": ('queue="preview"', "> 60", "2m"),
        "RoomfitTrainQueueStalled": ('queue="train"', "> 900", None),
        "RoomfitQueueWithoutWorkers": ("roomfit_workers", "== 0", "2m"),
        "RoomfitJobFailureRate": ('status="failed"', "> 0.10", None),
        "RoomfitWebhookBacklog": ("roomfit_webhook_deliveries_pending", "> 1000", "10m"),
        "RoomfitApi5xxRatio": ('status=~"5.."', "> 0.05", None),
        "RoomfitPreviewReadSlow": ('route="/v1/previews/{preview_id}"', "> 0.25", "10m"),
    }
    for alert, (needle, threshold, duration) in wanted.items():
        expr, for_ = exprs[alert]
        assert needle in expr and threshold in expr, alert
        assert duration is None or for_ == duration, alert


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.update(expr="rate(roomfit_no_such_metric[5m]) > 1"), "unknown metric roomfit_no_such"),
        (lambda r: r.pop("expr"), "missing expr"),
        (lambda r: r.update({"for": "ten minutes"}), "bad duration"),
        (lambda r: r.update(labels={"severity": "sev1"}), "severity not one of"),
        (lambda r: r["annotations"].pop("runbook"), "no runbook annotation"),
        (
            lambda r: r.update(expr="roomfit_jobs_total_bucket > 1"),
            "unknown metric roomfit_jobs_total_bucket",
        ),
    ],
)
def test_the_checker_catches_a_broken_rule(change: Any, expected: str) -> None:
    doc = _alerts()
    change(doc["groups"][0]["rules"][0])
    problems = rule_problems(doc)
    assert any(expected in p for p in problems), problems


def test_the_checker_catches_a_broken_file() -> None:
    assert rule_problems({"rules": []}) == ["no `groups` list"]
    assert rule_problems({"groups": [{"name": "x", "rules": []}]}) != []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(ALERTS.read_text(encoding="utf-8").replace("> 60", "> > 60", 1), encoding="utf-8")
    refused = subprocess.run(["promtool", "check", "rules", str(broken)], capture_output=True, timeout=60)
    assert refused.returncode != 0, "promtool must refuse a broken expression"


def test_the_dashboard_draws_every_metric_family() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = dashboard_exprs(dashboard)
    assert exprs, "no panel has a query"
    assert [e for e in exprs if unknown_metrics(e)] == []
    drawn = {_family(m) for e in exprs for m in METRIC.findall(e)}
    assert FAMILIES - drawn == set(), "families without a panel"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_the_dashboard_check_catches_an_unknown_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    dashboard["panels"][0]["targets"][0]["expr"] = "sum(rate(roomfit_http_requests_totl[5m]))"
    assert [e for e in dashboard_exprs(dashboard) if unknown_metrics(e)] != []


def test_the_scrape_example_parses_and_loads_the_rules() -> None:
    config = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    assert config["rule_files"] == [ALERTS.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"roomfit-api", "roomfit-workers", "roomfit-api-k8s", "roomfit-workers-k8s"} <= set(jobs)
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
