"""observability/prometheus: the scrape config and rules pass promtool, the rule tests make each
alert fire and resolve, and every sluice metric the rules and the Grafana dashboard use is one a
running pipeline exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from obs_support import run_in_process
from tests.conftest import REPO, wait_until

PROMETHEUS = REPO / "observability" / "prometheus"
PROMTOOL = "/usr/bin/promtool"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_scrape_config_and_rules_pass_promtool_check() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out
    out = promtool("check", "rules", "rules/sluice.rules.yml")
    assert "9 rules found" in out


def test_every_alert_fires_and_resolves_in_the_rule_tests() -> None:
    out = promtool("test", "rules", "tests/sluice.rules.test.yml")
    assert "SUCCESS" in out
    rules = yaml.safe_load((PROMETHEUS / "rules/sluice.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts >= {
        "SluicePipelineDown",
        "SluicePipelineAbsent",
        "SluiceIngestionStalled",
        "SluiceReconnectStorm",
        "SluiceDeadLettersGrowing",
        "SluiceBufferNearlyFull",
        "SluiceSinkFailing",
    }
    tests = yaml.safe_load((PROMETHEUS / "tests/sluice.rules.test.yml").read_text())
    for alert in alerts:
        checks = [
            c for t in tests["tests"] for c in t["alert_rule_test"] if c["alertname"] == alert
        ]
        assert any(c["exp_alerts"] for c in checks), f"{alert} is never shown firing"
        firing_at = min(c["eval_time"] for c in checks if c["exp_alerts"])
        assert any(
            not c["exp_alerts"] and _minutes(c["eval_time"]) > _minutes(firing_at) for c in checks
        ), f"{alert} is never shown resolving"


def _minutes(value: str) -> int:
    assert value.endswith("m")
    return int(value[:-1])


def _used_metrics() -> set[str]:
    texts = [(PROMETHEUS / "rules/sluice.rules.yml").read_text()]
    board = json.loads(
        (REPO / "observability/grafana/dashboards/sluice-ingestion.json").read_text()
    )
    texts += [t.get("expr", "") for p in board["panels"] for t in p.get("targets", [])]
    names = set()
    for text in texts:
        for name in re.findall(r"\bsluice_[a-z_]+\b", text):
            names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


async def test_rules_and_dashboard_use_only_metrics_sluice_exposes(tmp_path: Path) -> None:
    config = f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0"}}
sources:
  feed: {{type: generator, count: 100, batch_size: 10}}
sinks:
  out: {{type: file, path: {tmp_path}/out.jsonl, inputs: [feed]}}
alerts:
  rules:
    stale: {{type: freshness, source: feed, max_age_secs: 60}}
"""
    async with run_in_process(config) as running:
        await wait_until(lambda: running.task.done())
        status, text = await running.get("/metrics")
    assert status == 200
    exposed = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    used = _used_metrics()
    assert used, "no sluice metric found in the rules"
    missing = sorted(used - exposed)
    assert not missing, f"used by rules or dashboard, not exposed: {missing}"
