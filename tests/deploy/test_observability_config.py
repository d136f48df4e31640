"""The alert rules and the Grafana dashboard in deploy/: the rules pass promtool's own checks and
unit tests (deploy/prometheus/alerts_test.yml), every dashboard query is valid PromQL, and every
metric that a rule or a panel names is one a real server's /metrics exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.api.conftest import running_server

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "genloom.json"
_METRIC = re.compile(r"\b((?:genloom|process|python)_[a-z0-9_]+)\b")
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is needed (Debian package prometheus; .ci/run installs it)"
    return found


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(queries) >= 15 and all(q.strip() for q in queries)
    return queries


def rule_queries() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_the_alert_rules_pass_promtools_checks_and_unit_tests():
    checked = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested_alerts = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert alerts <= tested_alerts, f"alerts without a unit test: {alerts - tested_alerts}"


def test_a_broken_rule_is_caught(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("> 0.5", "> > 0.5", 1))
    assert subprocess.run([promtool(), "check", "rules", str(broken)], capture_output=True).returncode != 0


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # Grafana's variables, as Grafana would fill them; then promtool parses each as a recording rule.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "5m").replace("$model", ".*")}
        for i, q in enumerate(dashboard_queries())
    ]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool(), "check", "rules", str(tmp_path / "queries.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(tmp_path, tiny_model_dir):
    with running_server(tmp_path, tiny_model_dir) as (base, _):
        exposition = httpx.get(f"{base}/metrics").text
    exported = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        stem = name.removesuffix("_total") if kind == "counter" else name
        exported |= {stem + suffix for suffix in _SUFFIXES.get(kind, ("",))}
    named = {m for q in dashboard_queries() + rule_queries() for m in _METRIC.findall(q)}
    assert named, "no metric names found in the queries"
    assert named <= exported, f"named but not exported: {sorted(named - exported)}"
