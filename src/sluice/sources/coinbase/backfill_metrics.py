"""The counters of gap backfilling (:mod:`.backfill`), registered once per pipeline's registry
beside the runner's own (same labels as every component metric)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from sluice.metrics import LABELS, ComponentMetrics

__all__ = ["BackfillMetrics"]


@dataclass
class _Counters:
    healed: Counter
    backfilled: Counter
    unhealable: Counter
    rest_errors: Counter


_COUNTERS: weakref.WeakKeyDictionary[Any, _Counters] = weakref.WeakKeyDictionary()


class _Noop:
    def inc(self, amount: float = 1) -> None:
        pass


class BackfillMetrics:
    """The backfill counters of one source (registered once per pipeline registry)."""

    def __init__(self, component: ComponentMetrics) -> None:
        metrics = component.metrics
        self.healed: Any
        self.backfilled: Any
        self.unhealable: Any
        self.rest_errors: Any
        if not metrics.enabled:
            self.healed = self.backfilled = self.unhealable = self.rest_errors = _Noop()
            return
        counters = _COUNTERS.get(metrics)
        if counters is None:
            r = metrics.registry
            counters = _COUNTERS[metrics] = _Counters(
                Counter(
                    "sluice_source_gaps_healed",
                    "Gaps whose every missing trade was filled (over REST or late on the feed).",
                    LABELS,
                    registry=r,
                ),
                Counter(
                    "sluice_source_trades_backfilled",
                    "Trades fetched over REST to heal gaps and emitted.",
                    LABELS,
                    registry=r,
                ),
                Counter(
                    "sluice_source_gaps_unhealable",
                    "Gaps reported unhealable: too large, or trades REST does not return.",
                    LABELS,
                    registry=r,
                ),
                Counter(
                    "sluice_source_backfill_rest_errors",
                    "Failed REST requests of gap backfilling (429, 5xx, network), retried or not.",
                    LABELS,
                    registry=r,
                ),
            )
        labels = component.labels
        self.healed = counters.healed.labels(*labels)
        self.backfilled = counters.backfilled.labels(*labels)
        self.unhealable = counters.unhealable.labels(*labels)
        self.rest_errors = counters.rest_errors.labels(*labels)
