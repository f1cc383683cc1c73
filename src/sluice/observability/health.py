"""Is the event loop alive? A heartbeat task in the loop and a watchdog thread outside it.

The heartbeat wakes every ``interval`` seconds and records how late it woke (the loop's lag). The
watchdog thread notices when the heartbeat has not run for ``stall_secs``: the loop is wedged (a
blocking call, a CPU-bound callback). It logs ``event_loop.stalled`` once, with the stack the loop
thread is executing, which names the code to blame; when the loop runs again the heartbeat logs
``event_loop.recovered`` with how long it was stuck.

``/healthz`` is served from the loop itself, so while the loop is wedged the request is not
answered at all and the caller's timeout fails the check (a liveness probe's timeout is the
signal). Once the handler runs it fails the check too when the heartbeat is older than
``stall_secs``, when the heartbeat task died, or when the loop is lagging persistently (median lag
of the last beats above a fifth of ``stall_secs``), so a loop that is merely limping is reported,
not only a dead one.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["LoopMonitor"]


class LoopMonitor:
    """Heartbeat plus watchdog for the running event loop."""

    def __init__(
        self,
        stall_secs: float,
        log: Any,
        registry: CollectorRegistry | None = None,
        *,
        interval: float = 0.25,
    ) -> None:
        self.stall_secs = stall_secs
        self.lag_limit = stall_secs / 5
        self.log = log
        self.interval = min(interval, stall_secs / 4)
        self.last_beat = time.monotonic()
        self.lags: deque[float] = deque(maxlen=8)
        self.stalls = 0
        self.longest_stall = 0.0
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop_thread_id: int | None = None
        if registry is not None:
            registry.register(_LoopCollector(self))

    async def start(self) -> None:
        self._loop_thread_id = threading.get_ident()
        self.last_beat = time.monotonic()
        self._task = asyncio.create_task(self._heartbeat(), name="admin:heartbeat")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, name="sluice-loop-watchdog", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)

    async def _heartbeat(self) -> None:
        while True:
            expected = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            lag = max(0.0, now - expected)
            # measured as the watchdog measures it (since the last beat), so every stall it
            # reported is followed by its recovery
            since_last = now - self.last_beat
            self.lags.append(lag)
            self.last_beat = now
            if since_last > self.stall_secs:
                self.longest_stall = max(self.longest_stall, since_last)
                self.log.warning("event_loop.recovered", stalled_for_secs=round(since_last, 2))

    def _watch(self) -> None:
        reported = False
        while not self._stop.wait(min(0.5, self.interval * 2)):
            stalled = time.monotonic() - self.last_beat
            if stalled > self.stall_secs and not reported:
                reported = True
                self.stalls += 1
                self.log.error(
                    "event_loop.stalled",
                    stalled_secs=round(stalled, 2),
                    limit_secs=self.stall_secs,
                    stack=self._loop_stack(),
                )
            elif stalled <= self.stall_secs:
                reported = False

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread_id or -1)
        if frame is None:
            return ""
        return "".join(traceback.format_stack(frame, limit=12)).rstrip()

    @property
    def lag(self) -> float:
        """Median lag of the recent heartbeats, in seconds."""
        return statistics.median(self.lags) if self.lags else 0.0

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the loop is healthy, and the details for /healthz."""
        since_beat = time.monotonic() - self.last_beat
        details: dict[str, Any] = {
            "loop_lag_secs": round(self.lag, 4),
            "since_heartbeat_secs": round(since_beat, 3),
            "stalls": self.stalls,
        }
        if self._task is None or self._task.done():
            return False, {"status": "heartbeat not running", **details}
        if since_beat > self.stall_secs:
            return False, {"status": "event loop stalled", **details}
        if self.lag > self.lag_limit:
            return False, {"status": "event loop lagging", **details}
        return True, {"status": "ok", **details}


class _LoopCollector(Collector):
    def __init__(self, monitor: LoopMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        m = self.monitor
        lag = GaugeMetricFamily(
            "sluice_event_loop_lag_seconds", "Median lateness of the event loop's heartbeat."
        )
        lag.add_metric([], m.lag)
        since = GaugeMetricFamily(
            "sluice_event_loop_heartbeat_age_seconds", "Time since the loop's heartbeat last ran."
        )
        since.add_metric([], time.monotonic() - m.last_beat)
        stalls = CounterMetricFamily(
            "sluice_event_loop_stalls", "Times the event loop stopped running for loop_stall_secs."
        )
        stalls.add_metric([], m.stalls)
        return [lag, since, stalls]
