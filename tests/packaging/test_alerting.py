"""The alerting contract: packaging/prometheus/spire-pqc.rules.yml checked and unit-tested with promtool,
and the rules and the Grafana dashboard held to docs/metrics.md (metric names, labels, label values)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.packaging._support import CHECKOUT
from tests.packaging.metrics_contract import Family, parse_contract, problems, series_index

pytestmark = pytest.mark.promtool

RULES = CHECKOUT / "packaging" / "prometheus" / "spire-pqc.rules.yml"
RULE_TESTS = CHECKOUT / "tests" / "packaging" / "prometheus" / "spire-pqc.rules.test.yml"
DASHBOARD = CHECKOUT / "packaging" / "grafana" / "spire-pqc.dashboard.json"
CONTRACT = CHECKOUT / "docs" / "metrics.md"


def promtool() -> Path:
    override = os.environ.get("SPIRE_PQC_PROMTOOL")
    cache = Path(os.environ.get("SPIRE_PQC_CACHE", Path.home() / ".cache" / "spire-pqc"))
    path = Path(override) if override else cache / "bin" / "promtool"
    assert path.exists(), f"{path} is missing: run `make promtool` (unpacks Debian's prometheus package)"
    return path


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool()), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


@pytest.fixture(scope="module")
def contract() -> dict[str, Family]:
    families = parse_contract(CONTRACT)
    assert len(families) >= 20, f"docs/metrics.md lists only {sorted(families)}"
    return families


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The negative control: with the guide's 95 % threshold moved to 85 %, the unit tests fail."""
    rules = tmp_path / "packaging" / "prometheus" / RULES.name
    tests = tmp_path / "tests" / "packaging" / "prometheus" / RULE_TESTS.name
    rules.parent.mkdir(parents=True)
    tests.parent.mkdir(parents=True)
    rules.write_text(RULES.read_text().replace(") < 0.95", ") < 0.85"))
    tests.write_text(RULE_TESTS.read_text())
    result = _promtool("test", "rules", tests)
    assert result.returncode != 0
    assert "SpirePqcChannelEstablishmentLow" in result.stdout + result.stderr


def test_every_alert_has_unit_tests_and_is_documented() -> None:
    alerts = {rule["alert"]: rule["labels"]["severity"] for rule in _rules() if "alert" in rule}
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}  # fmt: skip
    assert set(alerts) <= tested, f"alerts without a promtool unit test: {sorted(set(alerts) - tested)}"
    documented = dict(re.findall(r"^\| `(SpirePqc\w+)` \| (\w+) \|", CONTRACT.read_text(), re.MULTILINE))
    assert documented == alerts, "the alert table of docs/metrics.md and the rules file disagree"


def test_the_guides_thresholds_are_the_alerts() -> None:
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in _rules() if "alert" in rule}
    assert ") < 0.95" in exprs["SpirePqcChannelEstablishmentLow"]
    assert ") > 0.01" in exprs["SpirePqcSignatureVerificationFailures"]
    assert "histogram_quantile(0.99," in exprs["SpirePqcOperationSlow"]
    assert exprs["SpirePqcOperationSlow"].endswith("> 0.1")
    assert exprs["SpirePqcKeyRotationFailed"].endswith("> 0")
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in _rules() if "alert" in rule}
    assert severities["SpirePqcKeyRotationFailed"] == "critical"


def test_rules_reference_only_the_contract(contract: dict[str, Family]) -> None:
    index = series_index(contract)
    found = {rule.get("alert", rule.get("record")): problems(rule["expr"], index) for rule in _rules()}
    assert not {name: issues for name, issues in found.items() if issues}


def test_dashboard_references_only_the_contract(contract: dict[str, Family]) -> None:
    index = series_index(contract)
    found = {query: problems(query, index) for query in _dashboard_queries()}
    assert not {query: issues for query, issues in found.items() if issues}


def test_the_contract_check_catches_strays(contract: dict[str, Family]) -> None:
    """The negative control of the two tests above."""
    index = series_index(contract)
    assert problems("rate(spire_pqc_agent_no_such_metric_total[5m])", index)
    assert problems('spire_pqc_agent_pqc_issuance_total{outcome="success"}', index)
    assert problems('spire_pqc_agent_pqc_issuance_total{result="ok"}', index)
    assert problems("sum by (colour) (spire_pqc_agent_pqc_issuance_total)", index)
    assert not problems('sum by (instance, result) (rate(spire_pqc_agent_pqc_issuance_total{result="failure"}[5m]))',
                        index)  # fmt: skip


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule, Grafana's $instance filled in)."""
    queries = [q for q in _dashboard_queries() if not q.startswith("label_values(")]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q.replace("$instance", ".*")} for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
