"""The JSON behind the dashboard (``GET /api/status``): one document with everything it shows.

Counts are the pipeline's own counters (the same numbers as /metrics); rates and the per-second and
per-minute series come from the in-process :class:`~sluice.observability.history.History`. In a series a
bucket is ``null`` before the run began (unknown) and ``0`` when the run was up and nothing came
(a real gap). The last bucket is the current, still filling, second or minute.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sluice import __version__
from sluice.metrics import Metrics

if TYPE_CHECKING:
    from sluice.observability.alerts.engine import AlertEngine
    from sluice.observability.health import LoopMonitor
    from sluice.observability.history import History, SeriesKey
    from sluice.runtime.pipeline import Pipeline
    from sluice.runtime.sink_worker import SinkWorker

__all__ = ["build_status"]

RATE_WINDOW_SECS = 10.0


def _by_component(metrics: Metrics, metric: Any) -> dict[str, float]:
    """Sum a family's series per component id (none when metrics are off)."""
    out: dict[str, float] = defaultdict(float)
    if not metrics.enabled:
        return out
    for labels, value in metrics.values(metric).items():
        out[labels[0]] += value
    return out


def _by_component_and(metrics: Metrics, metric: Any) -> dict[str, dict[str, float]]:
    """A family with one extra label, as ``{component_id: {label: value}}`` (none when metrics
    are off)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    if not metrics.enabled:
        return out
    for labels, value in metrics.values(metric).items():
        out[labels[0]][labels[3]] = value
    return out


def _sample(metrics: Metrics, name: str, component_id: str, component_type: str) -> float:
    """One source's value of a counter a plugin registered itself (e.g. the Coinbase source's
    ``sluice_source_gaps_healed_total``); 0 when it has none or metrics are off."""
    if not metrics.enabled:
        return 0.0
    labels = {"component_id": component_id, "component_kind": "source"}
    value = metrics.registry.get_sample_value(name, {**labels, "component_type": component_type})
    return value or 0.0


async def build_status(
    pipeline: Pipeline,
    *,
    history: History | None,
    alerts: AlertEngine | None,
    monitor: LoopMonitor | None,
    started_at: float,
    seconds: int = 300,
    minutes: int = 60,
) -> dict[str, Any]:
    """The status document; see docs/observability.md for its fields."""
    now = time.time()
    m = pipeline.metrics
    enabled = m.enabled
    sent = _by_component(m, m.sent_events)
    sent_bytes = _by_component(m, m.sent_bytes)
    dead = _by_component(m, m.dead_letters)
    errors = _by_component_and(m, m.errors)
    dropped = _by_component_and(m, m.dropped)
    discarded = _by_component_and(m, m.discarded)
    unrouted = _by_component_and(m, m.unrouted)
    connected = _by_component(m, m.connected)
    reconnects = _by_component(m, m.reconnects)
    gaps = _by_component(m, m.gaps)
    missed = _by_component(m, m.missed)
    last_event = _by_component(m, m.last_event_time)
    last_receive = _by_component(m, m.last_receive_time)
    waits = _by_component(m, m.rate_limit_waits)
    retries = _by_component(m, m.retries)
    readiness = await pipeline.readiness()
    last_second = history.last_second(now) if history is not None else math.floor(now) - 1

    def series(kind: str, cid: str) -> dict[str, Any]:
        if history is None:
            return {"rate_per_sec": None, "per_second": [], "per_minute": []}
        key: SeriesKey = (kind, cid, "records")
        recent = history.count_since(key, now - RATE_WINDOW_SECS)
        if recent is None:  # the run is younger than the window
            age = max(now - history.started_at, 1e-3)
            recent_rate = history.series[key].total / age if key in history.series else 0.0
        else:
            recent_rate = recent / RATE_WINDOW_SECS
        return {
            "rate_per_sec": round(recent_rate, 2),
            "per_second": history.per_second(key, last_second, seconds),
            "per_minute": history.per_minute(key, last_second, minutes),
        }

    def common(kind: str, cid: str, type_: str) -> dict[str, Any]:
        ready = readiness.get(f"{kind}/{cid}")
        return {
            "id": cid,
            "type": type_,
            "ready": ready.ready if ready is not None else None,
            "not_ready_reason": ready.reason if ready is not None and not ready.ready else None,
            "records": sent.get(cid, 0.0),
            "bytes": sent_bytes.get(cid, 0.0),
            "errors": sum(errors.get(cid, {}).values()),
            "errors_by_type": errors.get(cid, {}),
            "dead_letters": dead.get(cid, 0.0),
            "dropped": sum(dropped.get(cid, {}).values()),
            "dropped_by_reason": dropped.get(cid, {}),
            "rate_limit_waits": waits.get(cid, 0.0),
            **series(kind, cid),
        }

    sources = []
    for worker in pipeline.sources:
        cid = worker.component_id
        received = last_receive.get(cid, 0.0)
        event = last_event.get(cid, 0.0)
        # a lag from times recorded long ago (a replay that keeps them) would be nonsense
        lagging = bool(event) and worker.event_times == "wall-clock"
        sources.append(
            {
                **common("source", cid, worker.ctx.component_type),
                "state": worker.state,
                "connected": bool(connected.get(cid, 0.0)),
                "reconnects": reconnects.get(cid, 0.0),
                "gaps": gaps.get(cid, 0.0),
                "missed": missed.get(cid, 0.0),
                "gaps_healed": _sample(
                    m, "sluice_source_gaps_healed_total", cid, worker.ctx.component_type
                ),
                "unrouted": sum(unrouted.get(cid, {}).values()),
                "unrouted_by_kind": unrouted.get(cid, {}),
                "discarded": sum(discarded.get(cid, {}).values()),
                "discarded_by_reason": discarded.get(cid, {}),
                "event_times": worker.event_times,
                "last_receive_time": received or None,
                "last_event_time": event or None,
                "freshness_secs": round(now - received, 3) if received else None,
                "event_lag_secs": round(now - event, 3) if lagging else None,
                "details": worker.source.status_details(),
            }
        )
    sinks = []
    for sink in pipeline.all_sinks():
        cid = sink.component_id
        sinks.append(
            {
                **common("sink", cid, sink.ctx.component_type),
                "dead_letter_sink": sink is pipeline.dead_letters,
                "table": _table(sink),
                "started": sink.started,
                "retries": retries.get(cid, 0.0),
                "failing_secs": round(sink.failing_for(), 3),
                "unwritten": sink.unwritten(),
                "buffer": _buffer(sink),
            }
        )
    health = monitor.health()[1] if monitor is not None else None
    not_ready = {name: r.reason for name, r in readiness.items() if not r.ready}
    if pipeline.stopping:
        not_ready["pipeline"] = "stopping"
    span_s = last_second - seconds + 1
    span_m = (last_second // 60 - minutes + 1) * 60
    return {
        "version": __version__,
        "now": now,
        "started_at": started_at,
        "metrics_enabled": enabled,
        "health": health,
        "ready": not not_ready,
        "not_ready": not_ready,
        "stopping": pipeline.stopping,
        "seconds": {"start": span_s, "step": 1, "count": seconds},
        "minutes": {"start": span_m, "step": 60, "count": minutes},
        "sources": sources,
        "sinks": sinks,
        "alerts": [a.as_dict() for a in alerts.alerts] if alerts is not None else [],
    }


def _table(sink: SinkWorker) -> str | None:
    """``database.table`` of a sink that writes a table (the market panel reads its candles)."""
    database = getattr(sink.config, "database", None)
    table = getattr(sink.config, "table", None)
    if isinstance(database, str) and isinstance(table, str):
        return f"{database}.{table}"
    return None


def _buffer(sink: SinkWorker) -> dict[str, Any]:
    policy = sink.config.buffer
    events, nbytes = sink.buffer.events, sink.buffer.nbytes
    fill = max(events / policy.max_events, nbytes / policy.max_bytes)
    return {
        "events": events,
        "max_events": policy.max_events,
        "bytes": nbytes,
        "max_bytes": policy.max_bytes,
        "fill": round(min(fill, 9.99), 4),
        "when_full": policy.when_full,
    }
