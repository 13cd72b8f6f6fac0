"""Rules and dashboard reference only what the worker exports (feedwarden/stream/metrics.py).

A renamed metric, a dropped label or a changed histogram bucket would otherwise leave alerts
that can never fire and empty panels, with nothing failing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import (
    LEGEND_LABEL,
    RULE_LABELS,
    TARGET_LABELS,
    concrete,
    dashboard_exprs,
    dashboard_legends,
    exported,
    exported_families,
    exported_le,
    exposition,
    label_names,
    le_values,
    metric_names,
    promtool,
    rules,
)


def _sources() -> list[tuple[str, str]]:
    named = [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules()]
    return named + [(f"dashboard #{i}", expr) for i, expr in enumerate(dashboard_exprs())]


def _all_labels() -> set[str]:
    return set().union(*exported().values()) | TARGET_LABELS | RULE_LABELS


def test_exposition_is_complete() -> None:
    """Sanity: the helper sees every metric family of Metrics(), labelled ones included."""
    names = exported()
    for expected in ("feedwarden_posts_total", "feedwarden_decisions_total", "feedwarden_model_info",
                     "feedwarden_end_to_end_seconds_bucket", "feedwarden_drift_statistic"):
        assert expected in names
    assert {"label", "test"} <= names["feedwarden_drift_statistic"]


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    known = set(exported())
    unknown = {
        (where, name) for where, expr in _sources() for name in metric_names(expr) if name not in known
    }
    assert not unknown, f"not exported by feedwarden.stream.metrics: {sorted(unknown)}"


def test_rules_and_dashboard_reference_every_family() -> None:
    """Each exported metric family is used at least once by a rule or a panel."""
    used = {name for _, expr in _sources() for name in metric_names(expr)}
    unused = {family for family in exported_families()
              if not any(name == family or name.startswith(family + "_") for name in used)}
    assert not unused, f"exported but on no panel and in no rule: {sorted(unused)}"


def test_label_names_exist() -> None:
    allowed = _all_labels()
    bad = {(where, label) for where, expr in _sources() for label in label_names(expr)
           if label not in allowed}
    assert not bad, f"labels no metric or target carries: {sorted(bad)}"
    legends = {label for legend in dashboard_legends() for label in LEGEND_LABEL.findall(legend)}
    assert legends <= allowed, f"legend labels no metric carries: {sorted(legends - allowed)}"


def test_le_matchers_match_exported_buckets() -> None:
    """le="0.3" (the SLO) and le="10.0" (the backlog proxy) must be real bucket bounds, spelt as
    prometheus_client spells them."""
    for where, expr in _sources():
        for value in le_values(expr):
            histograms = {n.removesuffix("_bucket") for n in metric_names(expr) if n.endswith("_bucket")}
            assert histograms, f"{where}: le matcher without a _bucket series"
            for histogram in histograms:
                assert value in exported_le(histogram), f"{where}: {histogram} has no bucket le={value}"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule, Grafana variables filled in)."""
    group = {"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": concrete(expr)} for i, expr in enumerate(dashboard_exprs())
    ]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exposition_passes_promtool_lint() -> None:
    result = subprocess.run([promtool(), "check", "metrics"], input=exposition(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["feedwarden_end_to_end_seconds", "feedwarden_batch_stage_seconds"])
def test_latency_buckets_cover_the_slo(name: str) -> None:
    assert {"0.3", "10.0"} <= exported_le(name)
