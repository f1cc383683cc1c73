"""The alerts: section of a config: YAML in, the problems (with their lines) out."""

from __future__ import annotations

import pytest

from sluice.config import ConfigError, load_config_text
from sluice.registry import Registry

BASE = """\
sources:
  feed: {type: generator}
sinks:
  out: {type: file, path: /tmp/sluice-alerts-config-test.jsonl, inputs: [feed]}
"""


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        (
            "alerts:\n  rules:\n    stale: {type: freshness, source: fed, max_age_secs: 5}\n",
            "line 7: alerts.rules.stale.source: no source named 'fed' (did you mean 'feed'?)",
        ),
        (
            "alerts:\n  rules:\n    slow: {type: min_rate, component: outt, min_events: 1}\n",
            "line 7: alerts.rules.slow.component: no source or sink named 'outt' "
            "(did you mean 'out'?)",
        ),
        (
            "alerts:\n  rules:\n    e: {type: error_rat}\n",
            "line 7: alerts.rules.e.type: unknown alert rule type 'error_rat' "
            "(did you mean 'error_rate'?); one of: freshness, min_rate, error_rate",
        ),
        (
            "alerts:\n  rules:\n    e: {max_errors: 1}\n",
            "line 7: alerts.rules.e: missing required key 'type' (one of: freshness, min_rate, "
            "error_rate)",
        ),
        (
            "alerts:\n  rules:\n    s:\n      type: freshness\n      source: feed\n"
            "      max_age_secs: 5\n      for_sec: 3\n",
            "line 11: alerts.rules.s.for_sec: unknown key 'for_sec' (did you mean 'for_secs'?)",
        ),
        (
            "alerts:\n  webhook:\n    url: ftp://token@example.com/x\n",
            "line 7: alerts.webhook.url: expected an http:// or https:// URL",
        ),
        (
            "admin: {metrics: false}\n"
            "alerts:\n  rules:\n    s: {type: freshness, source: feed, max_age_secs: 5}\n",
            "line 7: alerts.rules: alert rules need metrics: remove admin.metrics: false",
        ),
    ],
)
def test_alert_config_problems(alerts: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(BASE + alerts, Registry.from_entry_points())
    rendered = caught.value.render()
    assert expected in rendered
    assert "token@example.com" not in rendered  # a webhook URL is a secret


def test_a_valid_alerts_section() -> None:
    loaded = load_config_text(
        BASE
        + """\
alerts:
  rules:
    stale: {type: freshness, source: feed, max_age_secs: 30, labels: {severity: page}}
    slow: {type: min_rate, component: out, min_events: 1, window_secs: 60}
    errors: {type: error_rate}
  webhook:
    url: https://hooks.example.com/T000/B000/XXXX
    headers: {Authorization: Bearer abc}
""",
        Registry.from_entry_points(),
    )
    alerts = loaded.model.alerts
    assert list(alerts.rules) == ["stale", "slow", "errors"]
    assert alerts.rules["errors"].window_secs == 300
    assert "XXXX" not in repr(alerts.webhook)
    assert alerts.webhook.url.get_secret_value().endswith("/XXXX")
