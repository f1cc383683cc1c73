"""A running pipeline: builds the components from a validated config and drives them.

Order of a run: sinks start (each retried while its far side is down, in its own task), sources
start and read, batches flow through the router into sink buffers. A run ends when every source has
ended and every buffer is drained, or on :meth:`Pipeline.stop`: sources stop reading, then sinks
drain their buffers, then the dead-letter sink drains, then sources commit and everything closes,
all within ``shutdown.drain_timeout_secs``. What could not be written by then is counted and
logged, and the run reports failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from sluice.config.loader import DEAD_LETTERS_ID, LoadedConfig
from sluice.config.models import SinkConfig
from sluice.metrics import Metrics
from sluice.plugin import ComponentContext, Readiness, Sink, Source
from sluice.registry import Registry
from sluice.runtime.router import Router
from sluice.runtime.sink_worker import SinkWorker
from sluice.runtime.source_worker import SourceFailed, SourceWorker

__all__ = ["Pipeline", "RunResult"]


@dataclass
class RunResult:
    """How a run ended."""

    ok: bool
    unwritten: int = 0
    """Records that were read but not written when the run ended."""
    error: str | None = None


@dataclass
class Pipeline:
    """Sources, sinks and the dead-letter sink of one config, wired together."""

    config: Any
    sources: list[SourceWorker]
    sinks: list[SinkWorker]
    dead_letters: SinkWorker
    metrics: Metrics
    log: Any
    _stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    _failure: str | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        loaded: LoadedConfig,
        registry: Registry,
        metrics: Metrics | None = None,
    ) -> Pipeline:
        """Create every component (no I/O yet)."""
        config = loaded.model
        metrics = metrics or Metrics()
        log = structlog.get_logger("sluice")
        data_dir = Path(config.data_dir)

        def context(
            component_id: str, kind: Literal["source", "sink"], type_: str
        ) -> ComponentContext:
            return ComponentContext(
                component_id=component_id,
                component_kind=kind,
                component_type=type_,
                data_dir=data_dir / f"{kind}s" / component_id,
                log=log.bind(component_id=component_id, component_kind=kind, component_type=type_),
                metrics=metrics.component(component_id, kind, type_),
            )

        def make_sink(component_id: str, sink_config: SinkConfig) -> Sink:  # type: ignore[type-arg]
            plugin = registry.sinks[sink_config.type]
            return plugin(component_id, sink_config)

        dead_config = config.dead_letters or default_dead_letter_config(registry, data_dir)
        dead_letters = SinkWorker(
            make_sink(DEAD_LETTERS_ID, dead_config),
            context(DEAD_LETTERS_ID, "sink", dead_config.type),
            dead_letters=None,
        )
        router = Router(dead_letters)
        sinks: list[SinkWorker] = []
        for sink_id, sink_config in config.sinks.items():
            worker = SinkWorker(
                make_sink(sink_id, sink_config),
                context(sink_id, "sink", sink_config.type),
                dead_letters,
            )
            router.connect(worker, sink_config.inputs)
            sinks.append(worker)
        sources: list[SourceWorker] = []
        for source_id, source_config in config.sources.items():
            plugin: type[Source] = registry.sources[source_config.type]  # type: ignore[type-arg]
            source = plugin(source_id, source_config)
            sources.append(
                SourceWorker(source, context(source_id, "source", source_config.type), router)
            )
        # an end-to-end lag from event times recorded long ago would be nonsense
        recorded = {w.component_id for w in sources if w.event_times == "recorded"}
        for worker in sinks:
            if any(ref.partition(".")[0] in recorded for ref in worker.config.inputs):
                worker.measures_lag = False
        return cls(config, sources, sinks, dead_letters, metrics, log)

    # -- control -------------------------------------------------------------------------------

    def stop(self, reason: str = "requested") -> None:
        """Begin a graceful stop (idempotent)."""
        if not self._stop_requested.is_set():
            self.log.info("pipeline.stopping", reason=reason)
            self._stop_requested.set()
            for worker in self.all_sinks():
                if worker.buffer.closed:
                    # already draining after the sources ended: a stop leaves what a disk buffer
                    # holds for the next start (a memory buffer drains regardless)
                    worker.buffer.close(drain=False)

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def unwritten(self) -> int:
        """Records read from sources and not yet written, across all sinks."""
        return sum(w.unwritten() for w in [*self.sinks, self.dead_letters])

    def all_sinks(self) -> list[SinkWorker]:
        return [*self.sinks, self.dead_letters]

    def sink(self, component_id: str) -> SinkWorker | None:
        return next((w for w in self.all_sinks() if w.component_id == component_id), None)

    async def readiness(self) -> dict[str, Readiness]:
        """Each component's readiness, by ``kind/id``."""
        result: dict[str, Readiness] = {}
        for source in self.sources:
            result[f"source/{source.component_id}"] = await _safe_readiness(source.readiness())
        for sink in self.all_sinks():
            result[f"sink/{sink.component_id}"] = await _safe_readiness(sink.readiness())
        return result

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Run until the sources end or :meth:`stop` is called; never raises for runtime errors."""
        await asyncio.to_thread(Path(self.config.data_dir).mkdir, parents=True, exist_ok=True)
        self.log.info(
            "pipeline.starting",
            sources=[s.component_id for s in self.sources],
            sinks=[s.component_id for s in self.sinks],
        )
        sink_tasks = {
            w.component_id: asyncio.create_task(w.run(), name=f"sink:{w.component_id}")
            for w in self.all_sinks()
        }
        for task in sink_tasks.values():
            task.add_done_callback(self._sink_task_done)
        source_tasks = [
            asyncio.create_task(self._run_source(w), name=f"source:{w.component_id}")
            for w in self.sources
        ]
        finish = asyncio.create_task(self._finish(source_tasks, sink_tasks))
        stop_wait = asyncio.create_task(self._stop_requested.wait())
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        timeout = self.config.shutdown.drain_timeout_secs
        unwritten = 0
        try:
            while not finish.done():
                if deadline is None:
                    # sources still reading, or finite sources ended and sinks draining:
                    # no limit until a stop is asked for
                    await asyncio.wait({finish, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    if stop_wait.done() and not finish.done():
                        for worker in self.sources:
                            worker.stop()
                        deadline = loop.time() + timeout
                else:
                    await asyncio.wait({finish}, timeout=max(0.0, deadline - loop.time()))
                    if not finish.done():
                        break
            if not finish.done():
                unwritten = self.unwritten()
                self.log.error(
                    "pipeline.drain_timeout", timeout_secs=timeout, unwritten_records=unwritten
                )
                self._failure = self._failure or (
                    f"{unwritten} records not written within the drain timeout ({timeout}s)"
                )
                for sink_worker in self.all_sinks():
                    sink_worker.metrics.unwritten.inc(sink_worker.unwritten())
        finally:
            stop_wait.cancel()
            for task in [finish, *source_tasks, *sink_tasks.values()]:
                task.cancel()
            await asyncio.gather(
                finish, *source_tasks, *sink_tasks.values(), return_exceptions=True
            )
            await self._close_all()
        if finish.done() and not finish.cancelled() and (left := self.unwritten()):
            # a sink that failed (a broken dead-letter sink) left records in memory or in flight
            unwritten = left
            for sink_worker in self.all_sinks():
                sink_worker.metrics.unwritten.inc(sink_worker.unwritten())
            self._failure = self._failure or f"{unwritten} records not written"
        ok = self._failure is None
        self._log_summary()
        backlogs = {w.component_id: b for w in self.all_sinks() if (b := w.backlog()) is not None}
        on_disk: dict[str, Any] = {}
        if backlogs:  # what each disk buffer keeps for the next start
            on_disk = {
                "disk_backlog_records": sum(records for records, _ in backlogs.values()),
                "disk_backlog_bytes": sum(nbytes for _, nbytes in backlogs.values()),
                "disk_backlog": {
                    sink: {"records": records, "bytes": nbytes}
                    for sink, (records, nbytes) in backlogs.items()
                },
            }
        self.log.info("pipeline.stopped", ok=ok, unwritten_records=unwritten, **on_disk)
        return RunResult(ok=ok, unwritten=unwritten, error=self._failure)

    async def _finish(
        self, source_tasks: list[asyncio.Task[None]], sink_tasks: dict[str, asyncio.Task[None]]
    ) -> None:
        """Wait for the sources to end (or be stopped), then drain every sink."""
        await asyncio.gather(*source_tasks, return_exceptions=True)
        if not self.stopping:
            self.log.info("pipeline.sources_finished")
        await self._drain(sink_tasks)

    def _log_summary(self) -> None:
        """One line per component with what it moved, for the record of the run."""
        workers: list[SourceWorker | SinkWorker] = [*self.sources, *self.all_sinks()]
        for worker in workers:
            counts = worker.metrics.totals()
            extra: dict[str, int] = {}
            if isinstance(worker, SinkWorker) and (backlog := worker.backlog()) is not None:
                # what a disk buffer keeps for the next start, and what it found corrupt
                extra["backlog_records"], extra["backlog_bytes"] = backlog
                buffer = worker.buffer
                if buffer.corrupt_frames:
                    extra["corrupt_frames"] = buffer.corrupt_frames
                    extra["corrupt_bytes"] = buffer.corrupt_bytes
            self.log.info(
                "component.summary",
                component_id=worker.component_id,
                component_kind=worker.ctx.component_kind,
                **{k: v for k, v in counts.items() if v or k in ("received", "sent")},
                **extra,
            )

    async def _run_source(self, worker: SourceWorker) -> None:
        try:
            await worker.run()
        except SourceFailed as exc:
            self._fail(str(exc))
        except Exception as exc:
            self._fail(f"source '{worker.component_id}' failed to start: {exc}")

    def _fail(self, message: str) -> None:
        self._failure = self._failure or message
        self.stop("failure")
        self.log.error("pipeline.failed", error=message)

    def _sink_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._fail(f"{task.get_name()} failed: {exc!r}")

    async def _drain(self, sink_tasks: dict[str, asyncio.Task[None]]) -> None:
        """Close the sink buffers and wait until the sinks have written what they held."""
        for worker in self.sinks:
            # a stop leaves what a disk buffer holds for the next start; an end drains it
            worker.buffer.close(drain=not self.stopping)
        await asyncio.gather(
            *(sink_tasks[w.component_id] for w in self.sinks), return_exceptions=True
        )
        self.dead_letters.buffer.close(drain=not self.stopping)
        await asyncio.gather(sink_tasks[DEAD_LETTERS_ID], return_exceptions=True)

    async def _close_all(self) -> None:
        for source_worker in self.sources:
            await source_worker.final_commit()
            with contextlib.suppress(Exception):
                await source_worker.source.close()
        for sink_worker in self.all_sinks():
            # a sink task that failed or was cancelled never finished its buffer: a disk buffer
            # persists its cursor and closes its log now (idempotent after a normal end)
            sink_worker.buffer.close(drain=False)
            try:
                await sink_worker.buffer.aclose()
            except Exception as exc:
                sink_worker.log.warning("buffer.close.failed", error=str(exc))
            try:
                await sink_worker.sink.close()
            except Exception as exc:
                sink_worker.log.warning("sink.close.failed", error=str(exc))


async def _safe_readiness(check: Any) -> Readiness:
    try:
        async with asyncio.timeout(2.0):
            result: Readiness = await check
            return result
    except Exception as exc:
        return Readiness(False, f"readiness check failed: {exc!r}")


def default_dead_letter_config(registry: Registry, data_dir: Path) -> SinkConfig:
    """A file sink writing ``<data_dir>/dead_letters.jsonl``."""
    file_sink = registry.sinks["file"]
    return file_sink.config_model.model_validate(
        {"type": "file", "path": str(data_dir / "dead_letters.jsonl")}
    )
