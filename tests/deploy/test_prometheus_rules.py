"""deploy/prometheus: promtool checks and unit tests, alert metadata, runbook anchors."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import (
    PROMETHEUS_CONFIG,
    README,
    RULES,
    RULES_TEST,
    alerts,
    load_yaml,
    promtool,
)

SEVERITIES = {"critical", "warning"}


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_check_rules() -> None:
    result = _run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests() -> None:
    result = _run(promtool(), "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config_with_rules(tmp_path: Path) -> None:
    """The compose Prometheus config is valid and loads rules.yml (its in-container rule path is
    pointed at the checkout)."""
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = _run(promtool(), "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", result.stdout), result.stdout


def test_every_alert_has_firing_and_silent_cases() -> None:
    """rules_test.yml exercises each alert both ways: some eval time where it fires, some where
    it must not."""
    firing: dict[str, int] = defaultdict(int)
    silent: dict[str, int] = defaultdict(int)
    for case in load_yaml(RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            bucket = firing if check.get("exp_alerts") else silent
            bucket[check["alertname"]] += 1
    names = {alert["alert"] for alert in alerts()}
    assert not names - set(firing), f"alerts never shown firing: {sorted(names - set(firing))}"
    assert not names - set(silent), f"alerts never shown silent: {sorted(names - set(silent))}"
    assert not (set(firing) | set(silent)) - names, "tests name alerts that do not exist"


def test_rules_test_loads_rules_file() -> None:
    spec = load_yaml(RULES_TEST)
    assert [(RULES_TEST.parent / f).resolve() for f in spec["rule_files"]] == [RULES.resolve()]


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_metadata(alert: dict) -> None:
    name = alert["alert"]
    assert re.fullmatch(r"Feedwarden[A-Z][A-Za-z]+", name)
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert annotations["summary"] and annotations["description"]
    assert annotations["runbook_url"] == f"README.md#runbook-{name.lower()}"


def test_alert_names_are_unique() -> None:
    names = [alert["alert"] for alert in alerts()]
    assert len(names) == len(set(names))


def _anchors(path: Path) -> set[str]:
    return set(re.findall(r'<a id="(runbook-[a-z0-9-]+)"></a>', path.read_text()))


def test_every_alert_has_a_runbook_section() -> None:
    """runbook_url points at README.md#runbook-<alert>: the README holds one section per alert."""
    wanted = {f"runbook-{alert['alert'].lower()}" for alert in alerts()}
    missing = wanted - _anchors(README)
    assert not missing, f"missing in README.md: {sorted(missing)}"
