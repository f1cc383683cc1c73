"""Test doubles for pipelines: a list source, a list sink, and a sink that fails or slows on demand.

They are plugins like any other, but not registered through entry points, so ``sluice plugins``
does not show them. Use :func:`registry_with_doubles` to get the installed plugins plus these, or run a
config that uses them with ``python -m sluice.testing run CONFIG`` (same as ``sluice run``).

``ListSink`` keeps what it wrote in memory on the instance (:attr:`ListSink.written`;
:func:`written` collects them from a pipeline); ``FlakySink``
appends JSON Lines to a file like the ``file`` sink, after an optional delay per batch, and fails its
first ``fail_first_writes`` writes with the chosen error, and every write while its
``closed_while`` file exists.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sluice.config.models import SinkConfig, SourceConfig
from sluice.errors import BrokenError, PermanentError, RejectedRecords, RetriableError
from sluice.plugin import ComponentContext, Sink, Source
from sluice.records import Record, SourceBatch, join_lines
from sluice.registry import Registry

if TYPE_CHECKING:
    from sluice.runtime.pipeline import Pipeline

__all__ = [
    "FlakySink",
    "FlakySinkConfig",
    "ListSink",
    "ListSinkConfig",
    "ListSource",
    "ListSourceConfig",
    "free_port",
    "registry_with_doubles",
    "written",
]


class ListSourceConfig(SourceConfig):
    """Records given in the config itself."""

    type: Literal["list"] = "list"
    records: list[dict[str, Any]] = Field(
        default_factory=list, description="The records, in order."
    )
    batch_size: int = Field(100, gt=0, description="Records per batch.")
    kind: str = Field("record", description="The records' kind.")


class ListSource(Source[ListSourceConfig]):
    """Yields its records once, in batches, then ends (commits are recorded in ``committed``).

    The records are the config's; a Python test may put any :class:`Record` objects (any JSON
    text, any kinds, many thousands) in :attr:`records` before the pipeline runs. Pace it with
    the ``rate_limit`` every source has.
    """

    config_model = ListSourceConfig
    description = "Records listed in the config (test double)."

    def __init__(self, component_id: str, config: ListSourceConfig) -> None:
        super().__init__(component_id, config)
        self.records: Sequence[Record] = [
            Record.from_data(item, config.kind) for item in config.records
        ]
        self.emitted = 0
        """Records yielded so far."""
        self.committed: list[Any] = []

    async def batches(self) -> AsyncIterator[SourceBatch]:
        items = self.records
        size = self.config.batch_size
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            self.emitted = start + len(chunk)
            yield SourceBatch(list(chunk), token=self.emitted)

    async def commit(self, token: Any) -> None:
        self.committed.append(token)


class ListSinkConfig(SinkConfig):
    """Keep written records in memory (``ListSink.written``; ``sluice.testing.written()``)."""

    type: Literal["list"] = "list"
    reject_field: str | None = Field(
        None, description="Reject (to the dead letters) records that have this field."
    )


class ListSink(Sink[ListSinkConfig]):
    """In-memory sink for tests (at-least-once, like any sink)."""

    config_model = ListSinkConfig
    description = "Keep records in memory (test double)."

    def __init__(self, component_id: str, config: ListSinkConfig) -> None:
        super().__init__(component_id, config)
        self.written: list[Record] = []
        """What this sink wrote, in order (cleared when it starts)."""

    async def start(self, ctx: ComponentContext) -> None:
        self.written = []

    async def write_batch(self, records: Sequence[Record]) -> None:
        field = self.config.reject_field
        rejected = {}
        if field is not None:
            rejected = {i: f"has field {field!r}" for i, r in enumerate(records) if field in r.data}
        self.written.extend(r for i, r in enumerate(records) if i not in rejected)
        if rejected:
            raise RejectedRecords(rejected)


class FlakySinkConfig(SinkConfig):
    """A JSON Lines file sink that is slow or fails on demand."""

    type: Literal["flaky"] = "flaky"
    path: Path = Field(description="File to append to.")
    delay_secs: float = Field(0.0, ge=0, description="Sleep before every write.")
    fail_first_writes: int = Field(0, ge=0, description="Fail this many writes first.")
    failure: Literal["retriable", "permanent", "oserror"] = Field(
        "retriable", description="The error the failing writes raise."
    )
    closed_while: Path | None = Field(
        None,
        description=(
            "While this file exists every write fails (retriable): a far side that a test takes "
            "down and brings back from outside the process."
        ),
    )
    hang_after_writes: int | None = Field(
        None,
        ge=0,
        description="After this many successful writes, the next write never returns (a far "
        "side that stops answering; the batch stays in flight).",
    )
    broken_after_writes: int | None = Field(
        None,
        ge=0,
        description="After this many successful writes, every write raises BrokenError (a far "
        "side that waiting cannot cure, such as a directory where the file was).",
    )


class FlakySink(Sink[FlakySinkConfig]):
    """Appends JSON Lines after ``delay_secs``; the first ``fail_first_writes`` writes fail; after
    ``hang_after_writes`` successful writes, writing hangs."""

    config_model = FlakySinkConfig
    description = "A JSON Lines file sink that is slow or fails on demand (test double)."

    def __init__(self, component_id: str, config: FlakySinkConfig) -> None:
        super().__init__(component_id, config)
        self.attempts = 0
        self.written = 0

    async def write_batch(self, records: Sequence[Record]) -> None:
        self.attempts += 1
        if (
            self.config.hang_after_writes is not None
            and self.written >= self.config.hang_after_writes
        ):
            await asyncio.Event().wait()  # until the run is cancelled or the process killed
        if (
            self.config.broken_after_writes is not None
            and self.written >= self.config.broken_after_writes
        ):
            raise BrokenError(f"broken after {self.written} writes")
        if self.config.delay_secs:
            await asyncio.sleep(self.config.delay_secs)
        gate = self.config.closed_while
        if gate is not None and gate.exists():
            raise RetriableError(f"closed while {gate} exists")
        if self.attempts <= self.config.fail_first_writes:
            message = f"injected failure {self.attempts} of {self.config.fail_first_writes}"
            if self.config.failure == "permanent":
                raise PermanentError(message)
            if self.config.failure == "oserror":
                raise OSError(message)
            raise RetriableError(message)
        data = join_lines(records)
        await asyncio.to_thread(_append, self.config.path, data)
        self.written += 1


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.write(data)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registry_with_doubles() -> Registry:
    """The installed plugins plus the test doubles (``list`` source and sink, ``flaky`` sink)."""
    registry = Registry.from_entry_points()
    registry.register("source", "list", ListSource, origin="sluice.testing")
    registry.register("sink", "list", ListSink, origin="sluice.testing")
    registry.register("sink", "flaky", FlakySink, origin="sluice.testing")
    return registry


def written(pipeline: Pipeline) -> dict[str, list[Record]]:
    """What each ``list`` sink of ``pipeline`` wrote, by component id."""
    return {
        worker.component_id: worker.sink.written
        for worker in pipeline.all_sinks()
        if isinstance(worker.sink, ListSink)
    }
