"""Prometheus metrics, the same names and labels for every component.

One :class:`Metrics` per pipeline owns its own ``CollectorRegistry`` (passed around, never a module
global). The runner counts what flows; a plugin counts its own signals (reconnects, gaps) through the
:class:`ComponentMetrics` it receives in its context. Gauges that mirror state (buffer depth) are read
at scrape time, so the hot path pays nothing for them. Counters are bumped once per batch, not per
record.

``Metrics(enabled=False)`` (config ``admin.metrics: false``) hands out no-op handles instead, so the
runner's counting costs nothing; the dashboard and in-process alerts need the metrics and refuse to
run without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice import __version__

__all__ = ["ComponentMetrics", "Metrics"]

LABELS = ("component_id", "component_kind", "component_type")

FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass
class _GaugeSource:
    name: str
    documentation: str
    labels: tuple[str, ...]
    read: Callable[[], float]
    label_names: tuple[str, ...] = LABELS


@dataclass
class _GaugeSeriesSource:
    """Several series of one component, told apart by extra labels (e.g. a topic's partitions)."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    extra_labels: tuple[str, ...]
    read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class _StateCollector(Collector):
    """Gauges whose value is read from live objects when /metrics is scraped."""

    def __init__(self) -> None:
        self.sources: list[_GaugeSource] = []
        self.series: list[_GaugeSeriesSource] = []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for source in self.sources:
            family = families.get(source.name)
            if family is None:
                family = GaugeMetricFamily(
                    source.name, source.documentation, labels=source.label_names
                )
                families[source.name] = family
            family.add_metric(source.labels, source.read())
        for many in self.series:
            family = families.get(many.name)
            if family is None:
                family = GaugeMetricFamily(
                    many.name, many.documentation, labels=(*LABELS, *many.extra_labels)
                )
                families[many.name] = family
            for extra, value in many.read():
                family.add_metric((*many.labels, *extra), value)
        return families.values()


class _Noop:
    """Stands in for every metric handle when metrics are off."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def set_function(self, read: Callable[[], float]) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


NOOP: Any = _Noop()


class Metrics:
    """The metrics of one pipeline."""

    def __init__(self, registry: CollectorRegistry | None = None, *, enabled: bool = True) -> None:
        # `_created` companions double the exposition and no rule here uses them
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.enabled = enabled
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.build_info = Gauge(
            "sluice_build_info", "Always 1; the running sluice version.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.received_events = Counter(
            "sluice_component_received_events", "Records a component took in.", LABELS, registry=r
        )
        self.received_bytes = Counter(
            "sluice_component_received_bytes", "Bytes of records taken in.", LABELS, registry=r
        )
        self.sent_events = Counter(
            "sluice_component_sent_events",
            "Records a component passed on (sources) or wrote (sinks).",
            LABELS,
            registry=r,
        )
        self.sent_bytes = Counter(
            "sluice_component_sent_bytes",
            "Bytes of records passed on or written.",
            LABELS,
            registry=r,
        )
        self.errors = Counter(
            "sluice_component_errors", "Errors, by type.", (*LABELS, "error_type"), registry=r
        )
        self.dead_letters = Counter(
            "sluice_component_dead_letters",
            "Records sent to the dead letters by this component.",
            LABELS,
            registry=r,
        )
        self.dropped = Counter(
            "sluice_component_dropped_events",
            "Records lost on purpose (a buffer's when_full: drop_newest, a rate limit that "
            "drops), by reason: lost data only.",
            (*LABELS, "reason"),
            registry=r,
        )
        self.discarded = Counter(
            "sluice_source_discarded",
            "Inputs a source read and turned into no record on purpose, by reason (a repeated "
            "or out-of-order trade, a message type nobody asked for): not a loss.",
            (*LABELS, "reason"),
            registry=r,
        )
        self.unrouted = Counter(
            "sluice_component_unrouted_events",
            "Records a source produced that no sink takes, by kind: by design, not a loss (e.g. "
            "heartbeats, which the source uses for liveness and gap checks).",
            (*LABELS, "kind"),
            registry=r,
        )
        self.flush_seconds = Histogram(
            "sluice_sink_flush_duration_seconds",
            "Time to write one batch, retries included.",
            LABELS,
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.lag_seconds = Histogram(
            "sluice_sink_end_to_end_lag_seconds",
            "From a record's event time to its write, observed once per batch for its oldest "
            "record.",
            LABELS,
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "sluice_sink_retries",
            "Batch write attempts that failed and were retried.",
            LABELS,
            registry=r,
        )
        self.unwritten = Counter(
            "sluice_component_unwritten_events",
            "Records still buffered or in flight when the process had to stop without them.",
            LABELS,
            registry=r,
        )
        self.connected = Gauge(
            "sluice_source_connected", "1 while a source's connection is up.", LABELS, registry=r
        )
        self.reconnects = Counter(
            "sluice_source_reconnects", "Connections a source reopened.", LABELS, registry=r
        )
        self.last_event_time = Gauge(
            "sluice_source_last_event_timestamp_seconds",
            "Event time of the newest record a source produced (freshness).",
            LABELS,
            registry=r,
        )
        self.last_receive_time = Gauge(
            "sluice_source_last_receive_timestamp_seconds",
            "Wall-clock time when a source last produced records (0 before the first).",
            LABELS,
            registry=r,
        )
        self.gaps = Counter(
            "sluice_source_gaps",
            "Gaps a source detected in its input's sequence (e.g. trade ids).",
            LABELS,
            registry=r,
        )
        self.missed = Counter(
            "sluice_source_missed_events",
            "Events a source knows it missed (e.g. trade ids inside gaps).",
            LABELS,
            registry=r,
        )
        self.rebaselines = Counter(
            "sluice_source_rebaselines",
            "Times a source moved its idea of where a sequence stands without reporting a gap "
            "(e.g. a product's trade ids after a reconnect or a run of out-of-order ids).",
            LABELS,
            registry=r,
        )
        self.rate_limit_waits = Counter(
            "sluice_component_rate_limit_waits",
            "Times a component waited for its rate limit.",
            LABELS,
            registry=r,
        )
        self.rate_limit_wait_seconds = Counter(
            "sluice_component_rate_limit_wait_seconds",
            "Time a component spent waiting for its rate limit.",
            LABELS,
            registry=r,
        )
        self.buffer_corrupt_frames = Counter(
            "sluice_buffer_corrupt_frames",
            "Frames of a disk buffer's log found corrupt and skipped (their records are lost).",
            LABELS,
            registry=r,
        )
        self.buffer_corrupt_bytes = Counter(
            "sluice_buffer_corrupt_bytes",
            "Bytes of a disk buffer's log skipped as corrupt.",
            LABELS,
            registry=r,
        )
        self._state = _StateCollector()
        r.register(self._state)
        self._plugin_families: dict[str, Counter | Histogram] = {}

    def component(self, component_id: str, kind: str, type_: str) -> ComponentMetrics:
        """Metric handles bound to one component's labels."""
        return ComponentMetrics(self, (component_id, kind, type_))

    def gauge(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        read: Callable[[], float],
        label_names: tuple[str, ...] = LABELS,
    ) -> None:
        """Expose ``read()`` as a gauge, sampled at scrape time (``labels`` are the values of
        ``label_names``; one family has one set of names)."""
        if self.enabled:
            self._state.sources.append(_GaugeSource(name, documentation, labels, read, label_names))

    def gauge_series(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        extra_labels: tuple[str, ...],
        read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        """Expose the ``(extra label values, value)`` pairs ``read()`` gives, at scrape time."""
        if self.enabled:
            self._state.series.append(
                _GaugeSeriesSource(name, documentation, labels, extra_labels, read)
            )

    def plugin_family(
        self,
        kind: type[Counter] | type[Histogram],
        name: str,
        documentation: str,
        extra_labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = FLUSH_BUCKETS,
    ) -> Counter | Histogram:
        """A plugin's own counter or histogram, created once per pipeline however many components
        of the plugin there are; its labels are the component's and ``extra_labels``."""
        family = self._plugin_families.get(name)
        if family is None:
            labels = (*LABELS, *extra_labels)
            if kind is Histogram:
                family = Histogram(
                    name, documentation, labels, buckets=buckets, registry=self.registry
                )
            else:
                family = Counter(name, documentation, labels, registry=self.registry)
            self._plugin_families[name] = family
        return family

    def values(self, metric: Counter | Gauge) -> dict[tuple[str, ...], float]:
        """Current value of each labelled series of a counter or gauge, by label values.

        Reads through the public collector interface; meant for samplers that run about once a
        second (dashboard history, alerts), not for the hot path.
        """
        out: dict[tuple[str, ...], float] = {}
        for family in metric.collect():
            wanted = family.name + "_total" if family.type == "counter" else family.name
            for sample in family.samples:
                if sample.name == wanted:
                    out[tuple(sample.labels.values())] = sample.value
        return out


@dataclass
class ComponentMetrics:
    """The metrics of one component, labels bound once."""

    metrics: Metrics
    labels: tuple[str, str, str]
    _errors: dict[str, Any] = field(default_factory=dict)
    _dropped: dict[str, Any] = field(default_factory=dict)
    _discarded: dict[str, Any] = field(default_factory=dict)
    _unrouted: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m, labels = self.metrics, self.labels
        if not m.enabled:
            for name in _HANDLES:
                setattr(self, name, NOOP)
            return
        is_source = labels[1] == "source"

        def both(family: Any) -> Any:
            return family.labels(*labels)

        def source_only(family: Any) -> Any:
            # a series that can never move (a sink's reconnects) would be noise on /metrics
            return family.labels(*labels) if is_source else NOOP

        def sink_only(family: Any) -> Any:
            return NOOP if is_source else family.labels(*labels)

        self.received_events = both(m.received_events)
        self.received_bytes = both(m.received_bytes)
        self.sent_events = both(m.sent_events)
        self.sent_bytes = both(m.sent_bytes)
        self.dead_letters = both(m.dead_letters)
        self.rate_limit_waits = both(m.rate_limit_waits)
        self.rate_limit_wait_seconds = both(m.rate_limit_wait_seconds)
        self.flush_seconds = sink_only(m.flush_seconds)
        self.lag_seconds = sink_only(m.lag_seconds)
        self.retries = sink_only(m.retries)
        self.unwritten = sink_only(m.unwritten)
        self.buffer_corrupt_frames = sink_only(m.buffer_corrupt_frames)
        self.buffer_corrupt_bytes = sink_only(m.buffer_corrupt_bytes)
        self.connected = source_only(m.connected)
        self.reconnects = source_only(m.reconnects)
        self.last_event_time = source_only(m.last_event_time)
        self.last_receive_time = source_only(m.last_receive_time)
        self.gaps = source_only(m.gaps)
        self.missed = source_only(m.missed)
        self.rebaselines = source_only(m.rebaselines)

    def rate_limited(self, waited_secs: float) -> None:
        """Count a rate-limit wait (no-op when nothing was waited)."""
        if waited_secs > 0:
            self.rate_limit_waits.inc()
            self.rate_limit_wait_seconds.inc(waited_secs)

    def totals(self) -> dict[str, int]:
        """Counts so far: received, sent, dropped (all reasons), discarded (all reasons),
        unrouted (all kinds), dead letters, errors, retries."""
        registry = self.metrics.registry
        labels = dict(zip(LABELS, self.labels, strict=True))

        def value(name: str, extra: dict[str, str] | None = None) -> int:
            sample = registry.get_sample_value(name, {**labels, **(extra or {})})
            return int(sample or 0)

        return {
            "received": value("sluice_component_received_events_total"),
            "sent": value("sluice_component_sent_events_total"),
            "dropped": sum(
                value("sluice_component_dropped_events_total", {"reason": r}) for r in self._dropped
            ),
            "discarded": sum(
                value("sluice_source_discarded_total", {"reason": r}) for r in self._discarded
            ),
            "unrouted": sum(
                value("sluice_component_unrouted_events_total", {"kind": k}) for k in self._unrouted
            ),
            "dead_letters": value("sluice_component_dead_letters_total"),
            "errors": sum(
                value("sluice_component_errors_total", {"error_type": t}) for t in self._errors
            ),
            "retries": value("sluice_sink_retries_total"),
            "unwritten": value("sluice_component_unwritten_events_total"),
        }

    def _count(self, children: dict[str, Any], family: Counter, label: str, count: int) -> None:
        """Bump ``family``'s series for this component and one extra ``label``."""
        if not self.metrics.enabled:
            return
        child = children.get(label)
        if child is None:
            child = children[label] = family.labels(*self.labels, label)
        child.inc(count)

    def error(self, error_type: str, count: int = 1) -> None:
        """Count an error of ``error_type`` (a short stable name, never a message)."""
        self._count(self._errors, self.metrics.errors, error_type, count)

    def drop(self, reason: str, count: int) -> None:
        """Count records lost on purpose (a policy that drops data)."""
        self._count(self._dropped, self.metrics.dropped, reason, count)

    def discard(self, reason: str, count: int) -> None:
        """Count inputs a source turned into no record on purpose (not a loss)."""
        self._count(self._discarded, self.metrics.discarded, reason, count)

    def unrouted(self, kind: str, count: int) -> None:
        """Count records of ``kind`` that no sink takes (not a loss: nothing asked for them)."""
        self._count(self._unrouted, self.metrics.unrouted, kind, count)

    def gauge(
        self,
        name: str,
        documentation: str,
        read: Callable[[], float],
        extra_labels: Mapping[str, str] | None = None,
    ) -> None:
        """Expose ``read()`` for this component as a gauge sampled at scrape time;
        ``extra_labels`` add to the component's (e.g. ``endpoint``)."""
        extra = dict(extra_labels or {})
        self.metrics.gauge(
            name,
            documentation,
            (*self.labels, *extra.values()),
            read,
            (*LABELS, *extra.keys()),
        )

    def gauge_series(
        self,
        name: str,
        documentation: str,
        extra_labels: tuple[str, ...],
        read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        """Expose several gauges of this component, told apart by ``extra_labels`` (e.g. topic and
        partition): ``read()`` gives ``(label values, value)`` pairs at scrape time."""
        self.metrics.gauge_series(name, documentation, self.labels, extra_labels, read)

    def histogram(
        self, name: str, documentation: str, buckets: tuple[float, ...] = FLUSH_BUCKETS
    ) -> Any:
        """This component's series of a plugin's own histogram (a no-op when metrics are off)."""
        if not self.metrics.enabled:
            return NOOP
        family = self.metrics.plugin_family(Histogram, name, documentation, buckets=buckets)
        return family.labels(*self.labels)


_HANDLES = (
    "received_events",
    "received_bytes",
    "sent_events",
    "sent_bytes",
    "dead_letters",
    "rate_limit_waits",
    "rate_limit_wait_seconds",
    "flush_seconds",
    "lag_seconds",
    "retries",
    "unwritten",
    "buffer_corrupt_frames",
    "buffer_corrupt_bytes",
    "connected",
    "reconnects",
    "last_event_time",
    "last_receive_time",
    "gaps",
    "missed",
    "rebaselines",
)
