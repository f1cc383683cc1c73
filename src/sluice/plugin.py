"""What a plugin is: a config model, a class with a small async lifecycle, and a registry entry.

The runner owns the event loop, batching, retries, acknowledgements, metrics and shutdown; a plugin
only does I/O. Nothing happens in a constructor: network and file work starts in ``start()``.

Source lifecycle: ``start(ctx)``, then ``batches()`` is iterated until it ends (a finite source) or
the runner stops it; ``commit(token)`` is called, in order, as batches are fully written; finally
``close()``. Sink lifecycle: ``start(ctx)``, ``write_batch(records)`` any number of times (never
concurrently), ``close()``. See :mod:`sluice.errors` for what ``write_batch`` may raise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from sluice.config.models import SinkConfig, SourceConfig

if TYPE_CHECKING:
    from sluice.metrics import ComponentMetrics
    from sluice.records import Record, SourceBatch

__all__ = [
    "ComponentContext",
    "QueryResult",
    "Readiness",
    "Sink",
    "Source",
]

SourceConfigT = TypeVar("SourceConfigT", bound=SourceConfig)
SinkConfigT = TypeVar("SinkConfigT", bound=SinkConfig)


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

    def __init__(self, component_id: str, config: Any) -> None:
        self.component_id = component_id
        self.config = config

    async def start(self, ctx: ComponentContext) -> None:  # noqa: B027 - optional hook
        """Open connections or files. Raising here fails the run (exit 1) with the message."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything ``start`` opened. Called once, also after a failed start."""

    async def readiness(self) -> Readiness:
        """Whether the component can do its work now (for /readyz)."""
        return Readiness(True)


class Source(_Component, Generic[SourceConfigT]):
    """A plugin that reads records. Subclasses set ``config_model`` and ``description``."""

    config_model: ClassVar[type[SourceConfig]]
    config: SourceConfigT
    counts_received: ClassVar[bool] = False
    """True when the source counts its own input in ``metrics.received_*`` (e.g. frames that
    yield no record); otherwise the runner counts each batch's records and rejected inputs."""

    def __init__(self, component_id: str, config: SourceConfigT) -> None:
        super().__init__(component_id, config)

    @abstractmethod
    def batches(self) -> AsyncIterator[SourceBatch]:
        """Yield batches of records until the input ends.

        The runner may cancel the iteration while it waits for the next batch (on shutdown);
        a batch already yielded is always delivered.
        """

    async def commit(self, token: Any) -> None:
        """Every batch up to the one carrying ``token`` is written by every sink that takes it."""


class Sink(_Component, Generic[SinkConfigT]):
    """A plugin that writes batches of records."""

    config_model: ClassVar[type[SinkConfig]]
    config: SinkConfigT

    def __init__(self, component_id: str, config: SinkConfigT) -> None:
        super().__init__(component_id, config)

    @abstractmethod
    async def write_batch(self, records: Sequence[Record]) -> None:
        """Write ``records`` durably, or raise (see :mod:`sluice.errors`)."""

    async def query(self, sql: str) -> QueryResult:
        """Answer a read-only query against this sink's store (``sluice sql``)."""
        raise NotImplementedError(f"sink type '{self.config.type}' cannot be queried")
