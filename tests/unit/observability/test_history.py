"""The in-process rate history: per-second and per-minute counts from the pipeline's counters,
zeros for quiet buckets inside the run, unknown (None) before it."""

from __future__ import annotations

import pytest

from sluice.metrics import Metrics
from sluice.observability.history import History, SeriesKey

T0 = 1_800_000_000.0  # a whole minute


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def test_each_second_gets_what_was_counted_in_it(metrics: Metrics) -> None:
    feed = metrics.component("feed", "source", "generator")
    history = History(metrics, T0 + 0.3)
    key: SeriesKey = ("source", "feed", "records")
    for second, count in enumerate([100, 0, 0, 50, 25]):
        feed.sent_events.inc(count)
        history.sample(T0 + second + 1.02)  # just after the second ended
    assert history.last_second(T0 + 5.5) == int(T0) + 4
    assert history.per_second(key, int(T0) + 4, 6) == [None, 100.0, 0.0, 0.0, 50.0, 25.0]
    assert history.per_minute(key, int(T0) + 4, 3) == [None, None, 175.0]


def test_a_late_sample_is_spread_over_the_seconds_it_covers(metrics: Metrics) -> None:
    sink = metrics.component("out", "sink", "file")
    history = History(metrics, T0)
    sink.sent_events.inc(10)
    history.sample(T0 + 1.02)
    sink.sent_events.inc(300)
    history.sample(T0 + 4.02)  # the loop was busy: three seconds in one sample
    key: SeriesKey = ("sink", "out", "records")
    assert history.per_second(key, int(T0) + 3, 4) == [10.0, 100.0, 100.0, 100.0]


def test_minutes_of_a_stop_are_zero_and_minutes_roll(metrics: Metrics) -> None:
    feed = metrics.component("feed", "source", "generator")
    history = History(metrics, T0, keep_minutes=10)
    key: SeriesKey = ("source", "feed", "records")
    for minute in range(12):
        for second in range(0, 60, 10):
            if minute not in (4, 5, 6):  # a stop of three minutes
                feed.sent_events.inc(6)
            history.sample(T0 + minute * 60 + second + 10.02)
    last = history.last_second(T0 + 12 * 60)
    per_minute = history.per_minute(key, last, 12)
    # the newest 10 minutes are kept; older ones are unknown again, not zero
    assert per_minute == [None, None, 36.0, 36.0, 0.0, 0.0, 0.0, 36.0, 36.0, 36.0, 36.0, 36.0]
    assert len(history.series[key].minutes) <= 11


def test_count_since_answers_windows_it_has_seen(metrics: Metrics) -> None:
    sink = metrics.component("out", "sink", "file")
    history = History(metrics, T0, window_secs=30)
    key: SeriesKey = ("sink", "out", "records")
    for second in range(1, 61):
        sink.sent_events.inc(2)
        history.sample(T0 + second)
    assert history.count_since(key, T0 + 50) == 20
    assert history.count_since(key, T0 + 30) == 60
    assert history.count_since(key, T0 - 5) is None  # before the run
    assert history.count_since(key, T0 - 5, partial=True) == 120
    assert history.count_since(("sink", "nope", "records"), T0 + 50) == 0


def test_errors_of_every_type_are_summed(metrics: Metrics) -> None:
    sink = metrics.component("out", "sink", "file")
    history = History(metrics, T0)
    history.sample(T0 + 1)
    sink.error("timeout", 2)
    sink.error("connection")
    sink.dead_letters.inc(4)
    history.sample(T0 + 2)
    assert history.count_since(("sink", "out", "errors"), T0 + 1) == 3
    assert history.count_since(("sink", "out", "dead_letters"), T0 + 1) == 4


def test_disabled_metrics_leave_an_empty_history() -> None:
    metrics = Metrics(enabled=False)
    feed = metrics.component("feed", "source", "generator")
    feed.sent_events.inc(5)
    feed.error("x")
    history = History(metrics, T0)
    history.sample(T0 + 1)
    assert history.series == {}


def test_the_minute_the_run_started_in_is_not_a_gap_before_the_first_record(
    metrics: Metrics,
) -> None:
    """A run started one second before a minute ends: that minute was barely inside the run, so
    without records it is unknown, not a red gap; a quiet minute after it is a gap."""
    feed = metrics.component("feed", "source", "generator")
    history = History(metrics, T0 + 59)
    key: SeriesKey = ("source", "feed", "records")
    history.sample(T0 + 60.02)  # nothing yet in the minute the run started in
    for second in range(61, 120):
        feed.sent_events.inc(1)
        history.sample(T0 + second + 0.02)
    for second in range(120, 181):  # then a stop of a whole minute
        history.sample(T0 + second + 0.02)
    last = history.last_second(T0 + 181)
    assert history.per_minute(key, last, 3) == [None, 59.0, 0.0]
    assert history.per_second(key, int(T0) + 61, 3) == [None, 1.0, 1.0]
