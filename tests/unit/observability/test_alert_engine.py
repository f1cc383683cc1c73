"""Alert rules evaluated against real counters at chosen times: firing, pending with for_secs,
resolving, windows that are not full yet, and the state on /metrics."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from prometheus_client import generate_latest

from sluice.config.alerts import AlertsConfig
from sluice.metrics import ComponentMetrics, Metrics
from sluice.observability.alerts.engine import AlertEngine, AlertEvent
from sluice.observability.history import History

T0 = 1_800_000_000.0


class Harness:
    def __init__(self, rules: dict[str, Any]) -> None:
        self.metrics = Metrics()
        self.feed = self.metrics.component("feed", "source", "generator")
        self.out = self.metrics.component("out", "sink", "file")
        self.history = History(self.metrics, T0)
        self.events: list[AlertEvent] = []
        config = AlertsConfig.model_validate({"rules": rules})
        self.engine = AlertEngine(
            config,
            self.history,
            self.metrics,
            {"feed": "source", "out": "sink"},
            structlog.get_logger("test"),
            notify=self.events.append,
        )

    def at(self, offset: float) -> dict[str, str]:
        now = T0 + offset
        self.history.sample(now)
        self.engine.evaluate(now)
        return {a.name: a.state for a in self.engine.alerts}

    def produce(self, component: ComponentMetrics, count: int, offset: float) -> None:
        component.sent_events.inc(count)
        if component is self.feed:
            component.last_receive_time.set(T0 + offset)


def test_freshness_fires_after_the_silence_and_resolves_with_the_next_record() -> None:
    h = Harness({"stale": {"type": "freshness", "source": "feed", "max_age_secs": 10}})
    assert h.at(5) == {"stale": "inactive"}  # counted from the start of the run
    assert h.at(11) == {"stale": "firing"}  # nothing ever came
    h.produce(h.feed, 5, 12)
    assert h.at(13) == {"stale": "inactive"}
    assert h.at(22) == {"stale": "inactive"}
    assert h.at(23) == {"stale": "firing"}
    assert [(e.status, e.started_at - T0, e.ended_at) for e in h.events] == [
        ("firing", 11, None),
        ("resolved", 11, T0 + 13),
        ("firing", 23, None),
    ]
    alert = h.events[0].alert
    assert alert["value"] == 11
    assert alert["summary"] == "no record yet from source 'feed' for 11s (limit 10s)"


def test_for_secs_holds_the_alert_pending_first() -> None:
    h = Harness(
        {"stale": {"type": "freshness", "source": "feed", "max_age_secs": 2, "for_secs": 5}}
    )
    assert h.at(3) == {"stale": "pending"}
    assert h.at(7) == {"stale": "pending"}
    assert h.at(8) == {"stale": "firing"}
    assert len(h.events) == 1
    h.produce(h.feed, 1, 8.5)
    assert h.at(9) == {"stale": "inactive"}
    assert [e.status for e in h.events] == ["firing", "resolved"]


def test_a_pending_alert_that_clears_sends_nothing() -> None:
    h = Harness(
        {"stale": {"type": "freshness", "source": "feed", "max_age_secs": 2, "for_secs": 5}}
    )
    assert h.at(3) == {"stale": "pending"}
    h.produce(h.feed, 1, 3.5)
    assert h.at(4) == {"stale": "inactive"}
    assert h.events == []


def test_min_rate_waits_for_a_full_window_then_judges_it() -> None:
    h = Harness(
        {
            "slow": {
                "type": "min_rate",
                "component": "out",
                "min_events": 100,
                "window_secs": 10,
            }
        }
    )
    for second in range(1, 10):
        h.produce(h.out, 5, second)  # 5/s: too slow, but the window is not full yet
        assert h.at(second) == {"slow": "inactive"}
    assert h.engine.alerts[0].evaluated is False
    h.produce(h.out, 5, 10)
    assert h.at(10) == {"slow": "firing"}
    assert h.engine.alerts[0].value == 50
    assert "sink 'out' wrote 50 records in the last 10s" in h.engine.alerts[0].summary
    h.produce(h.out, 40, 11)
    assert h.at(11) == {"slow": "firing"}  # (1, 11]: 9 seconds of 5, one of 40 = 85
    h.produce(h.out, 40, 12)
    assert h.at(12) == {"slow": "inactive"}  # (2, 12]: 8 of 5, two of 40 = 120
    assert h.engine.alerts[0].value == 120
    assert [e.status for e in h.events] == ["firing", "resolved"]


def test_min_rate_resolves_when_the_rate_recovers() -> None:
    h = Harness(
        {"slow": {"type": "min_rate", "component": "feed", "min_events": 30, "window_secs": 5}}
    )
    for second in range(1, 6):
        h.at(second)
    assert [alert.state for alert in h.engine.alerts] == ["firing"]
    for second in range(6, 9):
        h.produce(h.feed, 20, second)
        h.at(second)
    assert h.engine.alerts[0].state == "inactive"  # 60 records in the last 5 s
    assert [e.status for e in h.events] == ["firing", "resolved"]


def test_error_rate_counts_errors_and_dead_letters_from_the_start() -> None:
    h = Harness({"errors": {"type": "error_rate", "max_errors": 2, "window_secs": 300}})
    assert h.at(1) == {"errors": "inactive"}
    h.out.error("timeout", 2)
    assert h.at(2) == {"errors": "inactive"}  # 2 tolerated
    h.feed.dead_letters.inc(1)
    assert h.at(3) == {"errors": "firing"}  # no need to wait 300 s to see 3 errors
    assert h.engine.alerts[0].summary == (
        "3 errors in all components in the last 300s (tolerated: 2)"
    )
    assert h.at(304) == {"errors": "inactive"}  # they left the window


def test_error_rate_for_one_component_without_dead_letters() -> None:
    h = Harness(
        {
            "sink_errors": {
                "type": "error_rate",
                "component": "out",
                "max_errors": 0,
                "window_secs": 60,
                "include_dead_letters": False,
            }
        }
    )
    h.at(1)
    h.feed.error("io")
    h.out.dead_letters.inc(5)
    assert h.at(2) == {"sink_errors": "inactive"}
    h.out.error("connection")
    assert h.at(3) == {"sink_errors": "firing"}


def test_state_is_exported_on_metrics() -> None:
    h = Harness(
        {
            "stale": {"type": "freshness", "source": "feed", "max_age_secs": 1},
            "errors": {"type": "error_rate", "component": "out"},
        }
    )
    h.at(5)
    text = generate_latest(h.metrics.registry).decode()
    assert (
        'sluice_alert_firing{alert="stale",component_id="feed",rule_type="freshness"} 1.0' in text
    )
    assert (
        'sluice_alert_firing{alert="errors",component_id="out",rule_type="error_rate"} 0.0' in text
    )
    assert 'sluice_alert_value{alert="stale",component_id="feed",rule_type="freshness"} 5.0' in text


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"type": "freshness", "source": "feed"}, "max_age_secs"),
        ({"type": "freshness", "source": "feed", "max_age_secs": 0}, "greater than 0"),
        ({"type": "min_rate", "component": "out", "min_events": 1, "window_secs": 7200}, "3600"),
        ({"type": "error_rate", "max_errors": -1}, "greater than or equal to 0"),
        ({"type": "sometimes"}, "does not match any of the expected tags"),
    ],
)
def test_invalid_rules_are_refused(rule: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        AlertsConfig.model_validate({"rules": {"r": rule}})
