"""Evaluating alert rules against the in-process history, and keeping their state.

A rule is ``inactive``, ``pending`` (its condition holds, for less than ``for_secs``) or ``firing``.
Each change to or from ``firing`` is logged and handed to the notifier. A rule that cannot be
evaluated yet (a window longer than the run so far) stays as it is, and a pending one goes back to
inactive. The state is exported as gauges on the pipeline's registry (``sluice_alert_firing``,
``sluice_alert_value``) and read by the dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.config.alerts import AlertsConfig, ErrorRateRule, FreshnessRule, MinRateRule
from sluice.metrics import Metrics
from sluice.observability.history import History, SeriesKey

__all__ = ["AlertEngine", "AlertEvent", "AlertState"]

State = Literal["inactive", "pending", "firing"]
Rule = FreshnessRule | MinRateRule | ErrorRateRule


@dataclass
class AlertState:
    """One rule and where it stands."""

    name: str
    rule: Rule
    component_id: str | None
    state: State = "inactive"
    since: float | None = None
    """Unix time the current state began (None: inactive since the start)."""
    active_since: float | None = None
    """Unix time the condition began to hold (pending or firing)."""
    value: float | None = None
    """What the rule measured last (seconds of silence, records or errors in the window)."""
    summary: str = ""
    evaluated: bool = False

    @property
    def threshold(self) -> float:
        rule = self.rule
        if isinstance(rule, FreshnessRule):
            return rule.max_age_secs
        if isinstance(rule, MinRateRule):
            return rule.min_events
        return float(rule.max_errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.rule.type,
            "component_id": self.component_id,
            "state": self.state,
            "since": self.since,
            "active_since": self.active_since,
            "value": self.value,
            "threshold": self.threshold,
            "summary": self.summary,
            "evaluated": self.evaluated,
            "labels": dict(self.rule.labels),
        }


@dataclass(frozen=True)
class AlertEvent:
    """A change worth telling someone about, with the alert as it was then."""

    status: Literal["firing", "resolved"]
    alert: dict[str, Any]
    """:meth:`AlertState.as_dict` at the time of the change."""
    at: float
    started_at: float
    ended_at: float | None

    @property
    def name(self) -> str:
        return str(self.alert["name"])


class AlertEngine:
    """Evaluates every rule of an ``alerts:`` section."""

    def __init__(
        self,
        config: AlertsConfig,
        history: History,
        metrics: Metrics,
        components: dict[str, str],
        log: Any,
        notify: Callable[[AlertEvent], None] | None = None,
    ) -> None:
        """``components`` maps each component id to its kind (``source``/``sink``)."""
        self.config = config
        self.history = history
        self.metrics = metrics
        self.components = components
        self.log = log
        self.notify = notify
        self.alerts: list[AlertState] = []
        for name, rule in config.rules.items():
            component = rule.source if isinstance(rule, FreshnessRule) else rule.component
            self.alerts.append(AlertState(name, rule, component))
        if self.alerts and metrics.enabled:
            metrics.registry.register(_AlertCollector(self))

    @property
    def longest_window(self) -> float:
        windows = [
            a.rule.window_secs
            for a in self.alerts
            if isinstance(a.rule, MinRateRule | ErrorRateRule)
        ]
        return max(windows, default=0.0)

    def evaluate(self, now: float | None = None) -> None:
        """Evaluate every rule at ``now`` (unix time) and act on the changes."""
        now = time.time() if now is None else now
        freshness = self._last_receive_times() if self._has(FreshnessRule) else {}
        for alert in self.alerts:
            rule = alert.rule
            holds: bool | None
            if isinstance(rule, FreshnessRule):
                holds = self._freshness(alert, rule, now, freshness)
            elif isinstance(rule, MinRateRule):
                holds = self._min_rate(alert, rule, now)
            else:
                holds = self._error_rate(alert, rule, now)
            self._advance(alert, holds, now)

    def _has(self, kind: type) -> bool:
        return any(isinstance(a.rule, kind) for a in self.alerts)

    def _last_receive_times(self) -> dict[str, float]:
        m = self.metrics
        return {labels[0]: value for labels, value in m.values(m.last_receive_time).items()}

    # -- conditions ----------------------------------------------------------------------------

    def _freshness(
        self, alert: AlertState, rule: FreshnessRule, now: float, last: dict[str, float]
    ) -> bool:
        received = last.get(rule.source) or 0.0
        since = received if received > 0 else self.history.started_at
        age = max(0.0, now - since)
        alert.value = round(age, 3)
        alert.evaluated = True
        what = "no record" if received > 0 else "no record yet"
        alert.summary = rule.summary or (
            f"{what} from source '{rule.source}' for {age:.0f}s (limit {rule.max_age_secs:g}s)"
        )
        return age > rule.max_age_secs

    def _min_rate(self, alert: AlertState, rule: MinRateRule, now: float) -> bool | None:
        kind = self.components.get(rule.component, "source")
        count = self.history.count_since((kind, rule.component, "records"), now - rule.window_secs)
        if count is None:
            alert.summary = rule.summary or (
                f"waiting for {rule.window_secs:g}s of history for '{rule.component}'"
            )
            return None
        alert.value = count
        alert.evaluated = True
        verb = "produced" if kind == "source" else "wrote"
        alert.summary = rule.summary or (
            f"{kind} '{rule.component}' {verb} {count:.0f} records in the last "
            f"{rule.window_secs:g}s (expected at least {rule.min_events:g})"
        )
        return count < rule.min_events

    def _error_rate(self, alert: AlertState, rule: ErrorRateRule, now: float) -> bool | None:
        keys: list[SeriesKey] = []
        targets = [rule.component] if rule.component is not None else list(self.components)
        for component in targets:
            kind = self.components.get(component, "sink")
            keys.append((kind, component, "errors"))
            if rule.include_dead_letters:
                keys.append((kind, component, "dead_letters"))
        total = 0.0
        for key in keys:
            # errors seen in a window not yet full are already errors: judge what there is
            count = self.history.count_since(key, now - rule.window_secs, partial=True)
            if count is None:
                alert.summary = rule.summary or "waiting for the first sample"
                return None
            total += count
        alert.value = total
        alert.evaluated = True
        where = f"'{rule.component}'" if rule.component else "all components"
        alert.summary = rule.summary or (
            f"{total:.0f} errors in {where} in the last {rule.window_secs:g}s "
            f"(tolerated: {rule.max_errors})"
        )
        return total > rule.max_errors

    # -- state ---------------------------------------------------------------------------------

    def _advance(self, alert: AlertState, holds: bool | None, now: float) -> None:
        if holds is None:
            if alert.state == "pending":
                self._set(alert, "inactive", now)
                alert.active_since = None
            return
        if holds:
            if alert.state == "inactive":
                alert.active_since = now
                self._set(alert, "pending", now)
            if (
                alert.state == "pending"
                and now - (alert.active_since or now) >= alert.rule.for_secs
            ):
                self._set(alert, "firing", now)
                self.log.warning("alert.firing", alert=alert.name, summary=alert.summary)
                self._emit("firing", alert, now)
        elif alert.state != "inactive":
            was_firing = alert.state == "firing"
            started = alert.active_since or now
            self._set(alert, "inactive", now)
            alert.active_since = None
            if was_firing:
                self.log.info(
                    "alert.resolved",
                    alert=alert.name,
                    summary=alert.summary,
                    fired_for_secs=round(now - started, 1),
                )
                self._emit("resolved", alert, now, started)

    @staticmethod
    def _set(alert: AlertState, state: State, now: float) -> None:
        alert.state = state
        alert.since = now

    def _emit(
        self,
        status: Literal["firing", "resolved"],
        alert: AlertState,
        now: float,
        started: float | None = None,
    ) -> None:
        if self.notify is None:
            return
        snapshot = alert.as_dict()
        if status == "firing":
            event = AlertEvent(status, snapshot, now, alert.active_since or now, None)
        else:
            event = AlertEvent(status, snapshot, now, started or now, now)
        self.notify(event)


class _AlertCollector(Collector):
    """``sluice_alert_firing`` and ``sluice_alert_value``, read at scrape time."""

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["alert", "rule_type", "component_id"]
        firing = GaugeMetricFamily(
            "sluice_alert_firing", "1 while an in-process alert rule is firing.", labels=labels
        )
        pending = GaugeMetricFamily(
            "sluice_alert_pending",
            "1 while a rule's condition holds but for less than its for_secs.",
            labels=labels,
        )
        value = GaugeMetricFamily(
            "sluice_alert_value",
            "What a rule measured at its last evaluation (seconds, records or errors).",
            labels=labels,
        )
        for alert in self.engine.alerts:
            key = [alert.name, alert.rule.type, alert.component_id or ""]
            firing.add_metric(key, 1.0 if alert.state == "firing" else 0.0)
            pending.add_metric(key, 1.0 if alert.state == "pending" else 0.0)
            if alert.value is not None:
                value.add_metric(key, alert.value)
        return [firing, pending, value]
