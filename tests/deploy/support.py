"""Helpers shared by the deploy checks: file locations, PromQL scraping, the metrics exposition."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Info, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from feedwarden.stream.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
README = ROOT / "README.md"

# Labels that come from the scrape target (or Kubernetes service discovery), not the worker.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service"})
# Labels the rules create themselves (label_replace).
RULE_LABELS = frozenset({"drift_severity"})

METRIC_NAME = re.compile(r"\bfeedwarden_[A-Za-z0-9_]+")
# name="value", name=~"value", ... inside a selector.
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"([^\"]*)\"")
SELECTOR = re.compile(r"\{([^{}]*)\}")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; `make test` installs it)")
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, variables, annotations."""
    board = dashboard()
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if t.get("expr")]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            text = query["query"] if isinstance(query, dict) else query
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", text))
    exprs += [a["expr"] for a in board["annotations"]["list"] if a.get("expr")]
    return exprs


def dashboard_legends() -> list[str]:
    return [t.get("legendFormat", "") for p in dashboard_panels() for t in p.get("targets", [])]


def concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so that promtool can parse it."""
    for variable, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h"),
                            ("$job", ".+"), ("$instance", ".+")):
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def label_names(expr: str) -> set[str]:
    names = {m.group(1) for sel in SELECTOR.findall(expr) for m in MATCHER.finditer(sel)}
    for group in GROUPING.findall(expr):
        names |= {part.strip() for part in group.split(",") if part.strip()}
    return names


def le_values(expr: str) -> set[str]:
    return {m.group(2) for sel in SELECTOR.findall(expr) for m in MATCHER.finditer(sel) if m.group(1) == "le"}


@cache
def exposition() -> str:
    """What a worker exports once every labelled metric has a child and the Info is set."""
    metrics = Metrics()
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        if isinstance(metric, Info):
            metric.info({"bundle": "b", "version": "v", "policy_version": "p", "provider": "cpu"})
        elif metric._labelnames:  # no public accessor for a parent's label names
            metric.labels(*("x" for _ in metric._labelnames))
    return generate_latest(metrics.registry).decode()


@cache
def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from the exposition."""
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition()):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


@cache
def exported_families() -> set[str]:
    """Metric family names (counters without _total, Info without _info), `_created` left out."""
    return {family.name for family in text_string_to_metric_families(exposition())
            if not family.name.endswith("_created")}


def exported_le(name: str) -> set[str]:
    """The `le` values of histogram `name` exactly as exported (e.g. "0.3", "10.0")."""
    values = set()
    for line in exposition().splitlines():
        if line.startswith(f"{name}_bucket{{"):
            values |= {m.group(2) for m in MATCHER.finditer(line) if m.group(1) == "le"}
    return values
