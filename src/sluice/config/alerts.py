"""The ``alerts:`` section: rules evaluated inside the process, and an optional webhook.

A rule watches one component (or, for ``error_rate``, optionally all of them) and is *firing* while
its condition holds (after ``for_secs``, if set). Its state is exported as
``sluice_alert_firing{alert=…}`` on ``/metrics``, shown on the dashboard, logged on every change and,
with a ``webhook``, POSTed as JSON when it starts firing and when it resolves.

This module only imports pydantic, so the top-level config model can embed it without an import
cycle; which component ids exist is checked with the rest of the config (:func:`check_references`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

__all__ = [
    "ALERT_RULE_TYPES",
    "AlertRule",
    "AlertsConfig",
    "ErrorRateRule",
    "FreshnessRule",
    "MinRateRule",
    "WebhookConfig",
    "check_references",
]

AlertName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RuleBase(_Block):
    for_secs: float = Field(
        0.0,
        ge=0,
        description="How long the condition must hold before the alert fires (0: at once).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels sent with the webhook notification (e.g. severity, team).",
        examples=[{"severity": "page"}],
    )
    summary: str | None = Field(
        None, description="Text for people; default: a sentence built from the rule."
    )


class FreshnessRule(_RuleBase):
    """Fires when a source has produced no record for `max_age_secs` (counted from the start of
    the run until its first record)."""

    type: Literal["freshness"]
    source: str = Field(description="The source's id.")
    max_age_secs: float = Field(gt=0, description="Longest acceptable silence, in seconds.")


class MinRateRule(_RuleBase):
    """Fires when fewer than `min_events` records passed through a component in the last
    `window_secs` (a source's records produced, a sink's records written). Not evaluated before
    the run is `window_secs` old."""

    type: Literal["min_rate"]
    component: str = Field(description="A source or sink id.")
    min_events: float = Field(gt=0, description="Fewest records expected in the window.")
    window_secs: float = Field(60.0, ge=1, le=3600, description="The window, in seconds.")


class ErrorRateRule(_RuleBase):
    """Fires when more than `max_errors` errors happened in the last `window_secs` (write
    failures, restarts, records sent to the dead letters); evaluated from the start of the run."""

    type: Literal["error_rate"]
    component: str | None = Field(
        None, description="A source or sink id; unset counts every component."
    )
    max_errors: int = Field(0, ge=0, description="Errors tolerated in the window.")
    window_secs: float = Field(300.0, ge=1, le=3600, description="The window, in seconds.")
    include_dead_letters: bool = Field(
        True, description="Count records sent to the dead letters as errors too."
    )


ALERT_RULE_TYPES = ("freshness", "min_rate", "error_rate")

AlertRule = Annotated[FreshnessRule | MinRateRule | ErrorRateRule, Field(discriminator="type")]


class WebhookConfig(_Block):
    """Where notifications go: one JSON POST per change (firing, resolved), retried with backoff."""

    url: SecretStr = Field(
        description="http(s) URL to POST to; kept out of logs (it often embeds a token).",
        examples=["${ALERT_WEBHOOK_URL}"],
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. Authorization; kept out of logs.",
    )
    timeout_secs: float = Field(10.0, gt=0, description="Time allowed for one attempt.")
    max_attempts: int = Field(
        8, gt=0, description="Attempts per notification before it is given up (and logged)."
    )
    initial_backoff_secs: float = Field(1.0, gt=0, description="Delay before the first retry.")
    max_backoff_secs: float = Field(60.0, gt=0, description="Longest delay between retries.")
    send_resolved: bool = Field(True, description="Also notify when an alert stops firing.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if not text.startswith(("http://", "https://")) or len(text) < 10:
            raise ValueError("expected an http:// or https:// URL")
        return value


class AlertsConfig(_Block):
    """Alert rules evaluated in the process every second (no Prometheus or Grafana needed)."""

    rules: dict[AlertName, AlertRule] = Field(
        default_factory=dict,
        description="Rules by name: `type` is `freshness`, `min_rate` or `error_rate`.",
    )
    webhook: WebhookConfig | None = Field(
        None, description="Send notifications to this URL; unset: state on /metrics, logs only."
    )


def check_references(data: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems with what the rules refer to, as ``(path, message)``, on the raw config data.

    Runs beside the config's other cross-checks so each problem gets its line number.
    """
    alerts = data.get("alerts")
    if not isinstance(alerts, dict) or not isinstance(alerts.get("rules"), dict):
        return []
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    sinks = data.get("sinks") if isinstance(data.get("sinks"), dict) else {}
    assert isinstance(sources, dict)
    assert isinstance(sinks, dict)
    problems: list[tuple[tuple[str | int, ...], str]] = []
    admin = data.get("admin")
    if alerts["rules"] and isinstance(admin, dict) and admin.get("metrics") is False:
        problems.append(
            (("alerts", "rules"), "alert rules need metrics: remove admin.metrics: false")
        )
    components = [*sources, *sinks, "dead_letters"]
    for name, rule in alerts["rules"].items():
        if not isinstance(rule, dict):
            continue
        if rule.get("type") == "freshness":
            key, choices = "source", list(sources)
        else:
            key, choices = "component", components
        ref = rule.get(key)
        if ref is None or not isinstance(ref, str) or ref in choices:
            continue
        match = difflib.get_close_matches(ref, choices, n=1, cutoff=0.6)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        what = "source" if key == "source" else "source or sink"
        problems.append((("alerts", "rules", name, key), f"no {what} named '{ref}'{hint}"))
    return problems
