"""What runs beside a pipeline to watch it: the rate history sampler, the alert rules and their
notifier, the event-loop monitor and the admin HTTP server.

``sluice run`` starts one :class:`Observability` before the pipeline and closes it after; tests and
embedders can do the same. Every part reads the pipeline's counters about once a second; none of it
is on the records' path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from sluice.observability.alerts.engine import AlertEngine
from sluice.observability.alerts.webhook import WebhookNotifier
from sluice.observability.auth import TOKEN_FILE
from sluice.observability.health import LoopMonitor
from sluice.observability.history import History
from sluice.observability.server import AdminServer
from sluice.runtime.pipeline import Pipeline

__all__ = ["Observability"]

SAMPLE_INTERVAL_SECS = 1.0


class Observability:
    """History, alerts, loop monitor and admin server for one pipeline."""

    def __init__(self, pipeline: Pipeline, config: Any | None = None) -> None:
        """``config`` is the pipeline's validated config (default: ``pipeline.config``)."""
        config = config if config is not None else pipeline.config
        self.pipeline = pipeline
        self.started_at = time.time()
        metrics = pipeline.metrics
        log = pipeline.log
        admin = config.admin
        alerts_config = config.alerts
        components = {w.component_id: "source" for w in pipeline.sources}
        components.update({w.component_id: "sink" for w in pipeline.all_sinks()})
        self.notifier = (
            WebhookNotifier(alerts_config.webhook, metrics, log)
            if alerts_config.webhook is not None and alerts_config.rules
            else None
        )
        self.history = History(metrics, self.started_at)
        self.alerts = AlertEngine(
            alerts_config, self.history, metrics, components, log, notify=self.notifier
        )
        self.history.window_secs = max(self.history.window_secs, self.alerts.longest_window)
        self.monitor = LoopMonitor(admin.loop_stall_secs, log, metrics.registry)
        self.admin: AdminServer | None = None
        if admin.enabled:
            self.admin = AdminServer(
                pipeline,
                admin.listen,
                history=self.history if metrics.enabled else None,
                alerts=self.alerts,
                monitor=self.monitor,
                started_at=self.started_at,
                token=admin.token.get_secret_value() if admin.token is not None else None,
                token_file=Path(config.data_dir) / TOKEN_FILE,
                allowed_hosts=admin.allowed_hosts,
            )
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start everything; raises OSError when the admin port cannot be bound."""
        await self.monitor.start()
        try:
            if self.admin is not None:
                await self.admin.start()
        except OSError:
            await self.monitor.close()
            raise
        if self.notifier is not None:
            await self.notifier.start()
        if self.pipeline.metrics.enabled:
            self._sampler = asyncio.create_task(self._sample(), name="observe:sampler")

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self.notifier is not None:
            await self.notifier.close()
        if self.admin is not None:
            await self.admin.close()
        await self.monitor.close()

    def tick(self, now: float | None = None) -> None:
        """Sample the counters and evaluate the alert rules once."""
        now = time.time() if now is None else now
        self.history.sample(now)
        self.alerts.evaluate(now)

    async def _sample(self) -> None:
        log = self.pipeline.log
        while True:
            # just after each whole second, so one sample covers one second of counts
            await asyncio.sleep(SAMPLE_INTERVAL_SECS - time.time() % SAMPLE_INTERVAL_SECS + 0.02)
            try:
                self.tick()
            except Exception as exc:  # a bug here must not take the pipeline down
                log.error("observe.sample_failed", error=repr(exc))
