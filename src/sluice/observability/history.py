"""Rate history kept in the process: records, errors and dead letters per component, per second
(last few minutes) and per minute (last day), sampled from the pipeline's counters.

The sampler reads the counters about once a second (never per record). Each sample's increase is
spread evenly over the seconds since the previous sample, so a late sample (a busy loop) does not
show as an empty second followed by a double one. A second or minute inside the run with nothing
counted is 0, a real gap in the data; one before the run started is ``None``, unknown.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Literal

from sluice.metrics import Metrics

__all__ = ["History", "Series", "SeriesKey"]

What = Literal["records", "errors", "dead_letters"]
SeriesKey = tuple[str, str, What]
"""``(component_kind, component_id, what)``."""


@dataclass
class Series:
    """One counter's history."""

    total: float = 0.0
    """The counter's value at the last sample."""
    samples: list[tuple[float, float]] = field(default_factory=list)
    """``(unix time, total)`` at each sample, oldest first, for window queries."""
    seconds: dict[int, float] = field(default_factory=dict)
    minutes: dict[int, float] = field(default_factory=dict)
    """Unix minute (``int(t // 60)``) to count."""


class History:
    """Per-component rate history, fed by :meth:`sample`."""

    def __init__(
        self,
        metrics: Metrics,
        started_at: float,
        *,
        keep_seconds: int = 300,
        keep_minutes: int = 1440,
        window_secs: float = 300.0,
    ) -> None:
        self.metrics = metrics
        self.started_at = started_at
        """Unix time the run began; earlier buckets are unknown, not zero."""
        self.keep_seconds = keep_seconds
        self.keep_minutes = keep_minutes
        self.window_secs = max(window_secs, float(keep_seconds))
        """How far back :meth:`count_since` can answer."""
        self.series: dict[SeriesKey, Series] = {}
        self.last_sample: float | None = None

    def sample(self, now: float) -> None:
        """Read the counters and record what changed since the previous sample."""
        totals = self._totals()
        previous = self.last_sample if self.last_sample is not None else self.started_at
        for key, total in totals.items():
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = Series()
                series.samples.append((self.started_at, 0.0))
            delta = total - series.total
            series.total = total
            if delta > 0:
                self._spread(series, previous, now, delta)
            series.samples.append((now, total))
            self._trim(series, now)
        self.last_sample = now

    def _totals(self) -> dict[SeriesKey, float]:
        m = self.metrics
        totals: dict[SeriesKey, float] = {}
        for (cid, kind, _type), value in m.values(m.sent_events).items():
            totals[(kind, cid, "records")] = value
        for (cid, kind, _type), value in m.values(m.dead_letters).items():
            totals[(kind, cid, "dead_letters")] = value
        errors: dict[SeriesKey, float] = {}
        for (cid, kind, _type, _error), value in m.values(m.errors).items():
            errors[(kind, cid, "errors")] = errors.get((kind, cid, "errors"), 0.0) + value
        totals.update(errors)
        return totals

    @staticmethod
    def _spread(series: Series, start: float, end: float, amount: float) -> None:
        """Add ``amount`` evenly to the seconds whose middle lies in ``(start, end]`` (and to
        their minutes): a sample taken just after a second's end counts for that second."""
        first = math.ceil(start - 0.5)
        last = math.floor(end - 0.5)
        if last < first:
            first = last = math.floor(end)
        share = amount / (last - first + 1)
        seconds, minutes = series.seconds, series.minutes
        for second in range(first, last + 1):
            seconds[second] = seconds.get(second, 0.0) + share
            minute = second // 60
            minutes[minute] = minutes.get(minute, 0.0) + share

    def _trim(self, series: Series, now: float) -> None:
        samples = series.samples
        # keep one sample at or before the horizon so a full window can still be answered
        stale = bisect.bisect_left(samples, (now - self.window_secs - 5.0,)) - 1
        if stale > 64 or (stale > 0 and stale * 4 > len(samples)):
            del samples[:stale]
        if len(series.seconds) > self.keep_seconds + 1:
            oldest = math.floor(now) - self.keep_seconds
            for second in [s for s in series.seconds if s <= oldest]:
                del series.seconds[second]
        if len(series.minutes) > self.keep_minutes + 1:
            oldest = math.floor(now) // 60 - self.keep_minutes
            for minute in [m for m in series.minutes if m <= oldest]:
                del series.minutes[minute]

    # -- reading -----------------------------------------------------------------------------

    def keys(self, kind: str | None = None, what: What | None = None) -> list[SeriesKey]:
        return [
            k
            for k in self.series
            if (kind is None or k[0] == kind) and (what is None or k[2] == what)
        ]

    def count_since(self, key: SeriesKey, since: float, partial: bool = False) -> float | None:
        """How much the counter grew after ``since``; None when history does not reach back,
        unless ``partial``: then what grew since the start of the run."""
        if since < self.started_at - 1e-6:
            if not partial:
                return None
            since = self.started_at
        series = self.series.get(key)
        if series is None:
            return 0.0 if self.last_sample is not None else None
        samples = series.samples
        index = bisect.bisect_right(samples, (since, math.inf)) - 1
        if index < 0:
            return None
        return series.total - samples[index][1]

    def last_second(self, now: float) -> int:
        """The newest second the samples cover completely (before any: the one before ``now``)."""
        if self.last_sample is None:
            return math.floor(now) - 1
        return math.floor(self.last_sample - 0.5)

    def per_second(self, key: SeriesKey, last: int, count: int) -> list[float | None]:
        """Counts of the ``count`` seconds ending with second ``last`` (unix seconds)."""
        return self._buckets(
            self.series[key].seconds if key in self.series else {},
            range(last - count + 1, last + 1),
            1,
            last,
        )

    def per_minute(self, key: SeriesKey, last: int, count: int) -> list[float | None]:
        """Counts of the ``count`` minutes ending with the one holding second ``last``; that
        minute is still filling."""
        minute = last // 60
        return self._buckets(
            self.series[key].minutes if key in self.series else {},
            range(minute - count + 1, minute + 1),
            60,
            last,
        )

    def _buckets(
        self, buckets: dict[int, float], span: range, width: int, last: int
    ) -> list[float | None]:
        started = math.floor(self.started_at) // width
        known_to = last // width if self.last_sample is not None else started - 1
        kept = self.keep_seconds if width == 1 else self.keep_minutes
        known_from = max(started, known_to - kept + 1)  # older buckets were forgotten
        # the bucket the run started in was only partly inside it: without counts it is unknown,
        # not a gap (a run started at hh:mm:59 would otherwise open with a false alarm)
        return [
            round(buckets.get(bucket, 0.0), 3)
            if known_from <= bucket <= known_to and (bucket != started or buckets.get(bucket))
            else None
            for bucket in span
        ]
