"""What a plugin is: a config model, a class with a small async lifecycle, and a registry entry.

Plugin authors import everything from :mod:`sluice.sdk`; this module is where the classes live.
The runner owns the event loop, batching, retries, acknowledgements, metrics and shutdown; a plugin
only does I/O. Nothing happens in a constructor: network and file work starts in ``start()``.

Source lifecycle: ``start(ctx)`` (raising fails the run, exit 1), then ``batches()`` is iterated
until it ends (a finite source) or the runner stops it. If the iteration raises a retriable error
(``RetriableError``, ``OSError``, ``TimeoutError``) the runner
waits (the source's :meth:`Source.restart_policy`) and calls ``batches()`` again **on the same
instance**, without a new ``start``; any other error fails the run. ``commit(token)`` is called, in
order, as batches are fully written or dead-lettered by every sink that takes them; finally
``close()``, once, also after a failed start.

Sink lifecycle: ``start(ctx)``: a retriable error (its far side is down) is retried with the sink's
``retry`` backoff until it succeeds or the run stops; any other error fails the run (exit 1).
Then ``write_batch(records)`` any number of times, one at a time, never concurrently; a batch that
fails with a retriable error is passed again, with the same records and the same
:class:`BatchInfo` ``batch_id`` and a higher ``attempt`` (to sinks that set ``takes_batch_info``).
Finally ``close()``, once. See :mod:`sluice.errors` for what ``write_batch`` may raise.

Capabilities are declared on the class, never guessed: :attr:`Sink.queryable`,
:attr:`Sink.queryable_stopped`, :attr:`Sink.takes_batch_info`, :attr:`_Component.delivery`,
:meth:`Source.restart_policy`, :meth:`Source.connected` and :meth:`Source.event_times`.

Metrics have one owner each: the source worker counts a source from what its batches report
(records, rejected inputs, :attr:`~sluice.records.SourceBatch.read_events` and ``read_bytes`` for
input that made no record, ``discarded`` by reason) and sets ``sluice_source_connected`` from
:meth:`Source.connected`; the sink worker counts a sink. A plugin counts only signals of its own
domain (the Coinbase source's gaps) through ``ctx.metrics``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from sluice.config.models import SinkConfig, SourceConfig

if TYPE_CHECKING:
    from sluice.config.models import RetryPolicy
    from sluice.metrics import ComponentMetrics
    from sluice.records import Record, SourceBatch

__all__ = [
    "DELIVERIES",
    "BatchInfo",
    "ComponentContext",
    "Delivery",
    "EventTimes",
    "QueryResult",
    "Readiness",
    "Sink",
    "Source",
]

SourceConfigT = TypeVar("SourceConfigT", bound=SourceConfig)
SinkConfigT = TypeVar("SinkConfigT", bound=SinkConfig)

Delivery = Literal["at-most-once", "at-least-once", "effectively-once"]
"""What a component promises about each record across failures and restarts.

- ``at-most-once``: a record may be lost (a source that cannot replay: what was read but not yet
  written when the process dies is gone), never repeated by this component;
- ``at-least-once``: nothing acknowledged is lost; a retry or a restart may repeat records;
- ``effectively-once``: at-least-once underneath, with repeats removed (a sink that deduplicates a
  retried batch by its :attr:`BatchInfo.batch_id`); ``delivery_note`` says where it holds.
"""
DELIVERIES: tuple[Delivery, ...] = ("at-most-once", "at-least-once", "effectively-once")

EventTimes = Literal["wall-clock", "recorded"]
"""What a source's event times are (:meth:`Source.event_times`): ``wall-clock`` when they follow
the present, so that an event lag means something; ``recorded`` when they are times of the past
kept as they were (a replay without re-timing), so that no lag is shown."""


@dataclass(frozen=True)
class BatchInfo:
    """Which batch a ``write_batch`` call carries, for sinks that set ``takes_batch_info``."""

    batch_id: int
    """The same while the runner retries this batch; a new one for every other batch of this sink
    in this process (counting from 1). A sink that needs ids unique across restarts combines it
    with something of its own start (the ClickHouse sink: a random prefix per start)."""
    attempt: int = 1
    """1 for the first try, 2 for the first retry, and so on."""
    origin: str | None = None
    """A key naming exactly the records of this batch by where a replayable source read them
    (:func:`sluice.records.origin_key`: log, partition, offset range and count), stable across
    processes and restarts; None when a record has no origin (a live feed, a disk buffer). A sink
    that deduplicates prefers it to ``batch_id``: a loader that dies after writing and before its
    source committed writes the same records again under the same key."""


@dataclass
class ComponentContext:
    """What the runner gives a component at start."""

    component_id: str
    component_kind: Literal["source", "sink"]
    component_type: str
    data_dir: Path
    """Directory for this component's own state (checkpoints); created by the runner."""
    log: Any
    """A structlog logger bound to the component's id, kind and type."""
    metrics: ComponentMetrics


@dataclass(frozen=True)
class Readiness:
    """A component's answer to /readyz."""

    ready: bool
    reason: str = ""


@dataclass
class QueryResult:
    """Rows answered by a sink that can be queried (``sluice sql``)."""

    columns: list[str]
    rows: list[list[Any]]
    types: list[str] = field(default_factory=list)


class _Component(ABC):  # noqa: B024 - subclasses add the abstract methods
    description: ClassVar[str] = ""
    """One line for ``sluice plugins``."""
    delivery: ClassVar[Delivery] = "at-least-once"
    """This component's guarantee (shown by ``sluice plugins`` and in the config reference)."""
    delivery_note: ClassVar[str] = ""
    """Where the guarantee holds or how it weakens, in one sentence (optional)."""

    def __init__(self, component_id: str, config: Any) -> None:
        self.component_id = component_id
        self.config = config

    async def start(self, ctx: ComponentContext) -> None:  # noqa: B027 - optional hook
        """Open connections or files.

        A source that raises here fails the run (exit 1) with the message. A sink's start is
        retried with its ``retry`` backoff while it raises a retriable error (its far side is
        down); any other error fails the run.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything ``start`` opened. Called once, also after a failed start."""

    async def readiness(self) -> Readiness:
        """Whether the component can do its work now (for /readyz)."""
        return Readiness(True)

    def status_details(self) -> dict[str, Any]:
        """Component-specific state for /api/status and the dashboard (e.g. a Kafka source's
        per-partition lag): JSON-encodable, cheap (no I/O); empty by default."""
        return {}


class Source(_Component, Generic[SourceConfigT]):
    """A plugin that reads records. Subclasses set ``config_model`` and ``description``.

    ``delivery`` defaults to ``at-least-once`` for a source, which is right only when ``commit``
    makes it resume after what was written (a checkpoint); a live feed that cannot replay declares
    ``at-most-once``.
    """

    config_model: ClassVar[type[SourceConfig]]
    config: SourceConfigT

    def __init__(self, component_id: str, config: SourceConfigT) -> None:
        super().__init__(component_id, config)

    @abstractmethod
    def batches(self) -> AsyncIterator[SourceBatch]:
        """Yield batches of records until the input ends.

        The runner may cancel the iteration while it waits for the next batch (on shutdown);
        a batch already yielded is always delivered. After a retriable error the runner calls
        ``batches()`` again on the same instance (see :meth:`restart_policy`): a source that
        holds a connection opens a new one here, and one that can resume starts after the last
        committed token.
        """

    def connected(self) -> bool | None:
        """Whether the source's own connection is up now (subscribed, able to receive), for
        ``sluice_source_connected``; the runner reads it when the metric is read, so it must be
        cheap and must not raise. None (the default): the source has no connection of its own,
        and the runner reports it connected from its first batch until ``batches()`` fails or
        ends. A source never sets the metric itself."""
        return None

    def event_times(self) -> EventTimes:
        """Whether its records' event times follow the wall clock (``wall-clock``, the default:
        a live feed, a replay re-timed to the present), so that now minus the newest event time
        is an event lag, or are times recorded long ago (``recorded``: a replay that keeps its
        times, a file of old events), so that the dashboard shows no lag. Decided by the
        config alone: the runner asks once when it builds the pipeline, ``sluice monitor`` asks a
        source built from the config and never started."""
        return "wall-clock"

    def restart_policy(self) -> RetryPolicy | None:
        """The backoff between a retriable failure of ``batches()`` and its next call; None for
        the runner's default (0.5 s doubling to 30 s, with jitter, never giving up). A source with a
        ``reconnect`` config block returns it here."""
        return None

    async def commit(self, token: Any) -> None:
        """Every batch up to the one carrying ``token`` is written (or dead-lettered) by every
        sink that takes it. Called in token order, never concurrently with itself."""


class Sink(_Component, Generic[SinkConfigT]):
    """A plugin that writes batches of records."""

    config_model: ClassVar[type[SinkConfig]]
    config: SinkConfigT
    queryable: ClassVar[bool] = False
    """True when :meth:`query` answers while the sink runs (``sluice sql``, ``POST /api/query``)."""
    queryable_stopped: ClassVar[bool] = False
    """True when :meth:`query_stopped` can open the store with no pipeline running."""
    takes_batch_info: ClassVar[bool] = False
    """True when ``write_batch`` accepts the keyword ``batch`` (a :class:`BatchInfo`): the runner
    then passes it on every call, so a sink can make a retried batch idempotent by its id."""

    def __init__(self, component_id: str, config: SinkConfigT) -> None:
        super().__init__(component_id, config)

    @abstractmethod
    async def write_batch(self, records: Sequence[Record]) -> None:
        """Write ``records`` durably, or raise (see :mod:`sluice.errors`).

        A sink that sets ``takes_batch_info`` declares ``write_batch(self, records, batch:
        BatchInfo | None = None)``; the runner passes ``batch=`` then, and only then.
        """

    async def query(self, sql: str) -> QueryResult:
        """Answer a read-only query against this sink's store (``sluice sql``); set
        ``queryable``."""
        raise NotImplementedError(f"sink type '{self.config.type}' cannot be queried")

    async def query_stopped(self, sql: str) -> QueryResult:
        """Answer a read-only query with no pipeline running, opening the store itself; set
        ``queryable_stopped``."""
        raise NotImplementedError(f"sink type '{self.config.type}' cannot be queried stopped")


async def write(sink: Sink[Any], records: Sequence[Record], batch: BatchInfo) -> None:
    """Call ``sink.write_batch`` as its declaration asks (with ``batch=`` or without)."""
    if sink.takes_batch_info:
        await sink.write_batch(records, batch=batch)  # type: ignore[call-arg]
    else:
        await sink.write_batch(records)
