"""What every sink buffer is: the :class:`Buffer` protocol the sink worker uses, the
:class:`Segment` and :class:`Batch` that go through it, and :class:`BatchingQueue`, the size
accounting and batching rule both buffers share.

A buffer holds :class:`Segment`s: the part of one source batch that goes to this sink. Its size is
bounded by events and bytes; a ``put`` into a full buffer waits (``when_full: block``) or discards
the segment (``drop_newest``). A put is admitted while the buffer is under its limits, so it can
exceed them by at most one source batch. ``next_batch`` returns up to the batch policy's
``max_events``/``max_bytes`` records once one of those is reached, the oldest record has waited
``max_age_secs``, or the buffer is closed. Order is first in, first out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Protocol

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.records import Record
from sluice.runtime.ledger import Ticket

__all__ = ["Backlog", "Batch", "BatchingQueue", "Buffer", "BufferClosed", "Segment"]


class Segment:
    """Records of one source batch bound for one sink, with their acknowledgement ticket."""

    __slots__ = ("arrived", "nbytes", "records", "ticket")

    def __init__(self, records: Sequence[Record], nbytes: int, ticket: Ticket) -> None:
        self.records = records
        self.nbytes = nbytes
        self.ticket = ticket
        self.arrived = time.monotonic()

    def split(self, count: int) -> tuple[Segment, Segment]:
        """The first ``count`` records (with a child ticket) and the rest (with this ticket)."""
        head_records, tail_records = self.records[:count], self.records[count:]
        head_bytes = sum([len(r.raw) for r in head_records])
        head = Segment(head_records, head_bytes, self.ticket.split())
        tail = Segment(tail_records, self.nbytes - head_bytes, self.ticket)
        head.arrived = tail.arrived = self.arrived
        return head, tail


@dataclass(slots=True)
class Batch:
    """What the batcher hands to a sink: records in order, and the segments they came from."""

    segments: list[Segment]
    records: Sequence[Record]
    nbytes: int

    @property
    def oldest_arrival(self) -> float:
        return self.segments[0].arrived


class BufferClosed(RuntimeError):
    """A put into a buffer that was closed (the pipeline is stopping)."""


class Backlog(NamedTuple):
    """What a buffer keeps for the next start once it has finished."""

    records: int
    nbytes: int


class Buffer(Protocol):
    """A sink's buffer, as the sink worker sees it (memory or disk, never named)."""

    durable: ClassVar[bool]
    """True when what the buffer holds survives the process (a stop need not drain it)."""
    events: int
    """Records held now."""
    nbytes: int
    """Bytes of records held now."""
    failing: str | None
    """Why the buffer cannot take records now (the sink is not ready), or None."""
    corrupt_frames: int
    corrupt_bytes: int
    """What the buffer found damaged and skipped when it opened (0 for a memory buffer)."""
    abandoned: asyncio.Event
    """Set when a stop gives up what is in flight because it is safe (a durable buffer only)."""

    @property
    def closed(self) -> bool: ...

    async def put(self, segment: Segment) -> bool:
        """Store ``segment``; False when dropped by ``when_full: drop_newest``. Raises
        :class:`BufferClosed` after :meth:`close`. The buffer releases ``segment.ticket`` itself
        only when it makes the records durable; otherwise the ticket travels with the records."""
        ...

    async def next_batch(self) -> Batch | None:
        """The next batch by the batch policy; None once closed and empty (or abandoned)."""
        ...

    def close(self, drain: bool = True) -> None:
        """No more puts. ``drain=False`` lets a durable buffer keep what it holds for the next
        start; a memory buffer always drains."""
        ...

    async def aclose(self) -> None:
        """The consumer is done (drained, or gave up at a stop): persist state, close files."""
        ...

    def backlog(self) -> Backlog:
        """What stays for the next start (after :meth:`aclose`); nothing for a memory buffer."""
        ...

    def volatile_events(self) -> int:
        """Records that would be lost if the process stopped now."""
        ...

    def disk_bytes(self) -> int:
        """Bytes the buffer holds on disk now (0 for a memory buffer)."""
        ...


class BatchingQueue:
    """What every sink buffer shares: size accounting against the buffer policy, waiting for
    space (or dropping), and the batching rule. Subclasses store the records and implement
    ``_oldest_arrival``, ``_has_data`` and ``_take``."""

    def __init__(self, policy: BufferPolicy, batch: BatchPolicy) -> None:
        self.policy = policy
        self.batch_policy = batch
        self.events = 0
        self.nbytes = 0
        self._closed = False
        self._data: asyncio.Future[None] | None = None
        self._batch_full: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self.failing: str | None = None
        self.corrupt_frames = 0
        self.corrupt_bytes = 0
        self.abandoned = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def is_full(self) -> bool:
        return self.events >= self.policy.max_events or self.nbytes >= self.policy.max_bytes

    async def _make_room(self) -> bool:
        """Wait while the buffer is full; False when the policy says to drop instead."""
        while self.is_full():
            if self.policy.when_full == "drop_newest":
                return False
            if self._closed:
                raise BufferClosed("buffer closed")
            if self._space is None or self._space.done():
                self._space = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._space)
        if self._closed:
            raise BufferClosed("buffer closed")
        return True

    def _added(self, events: int, nbytes: int) -> None:
        """Count what was just stored and wake the batcher if it waits for it."""
        self.events += events
        self.nbytes += nbytes
        if self._data is not None and not self._data.done():
            self._data.set_result(None)
        if (
            self._batch_full is not None
            and not self._batch_full.done()
            and (
                self.events >= self.batch_policy.max_events
                or self.nbytes >= self.batch_policy.max_bytes
            )
        ):
            self._batch_full.set_result(None)

    def _removed(self, events: int, nbytes: int) -> None:
        """Count what was just taken and wake a put that waits for space."""
        self.events -= events
        self.nbytes = max(0, self.nbytes - nbytes)
        if self._space is not None and not self._space.done() and not self.is_full():
            self._space.set_result(None)

    def close(self, drain: bool = True) -> None:
        """No more puts; wakes every waiter."""
        self._closed = True
        for waiter in (self._data, self._batch_full, self._space):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _has_data(self) -> bool:
        raise NotImplementedError

    def _oldest_arrival(self) -> float:
        raise NotImplementedError

    async def _wait_for_batch(self) -> bool:
        """Wait until a batch is due by the batch policy; False when closed and empty."""
        loop = asyncio.get_running_loop()
        while not self._has_data():
            if self._closed:
                return False
            self._data = loop.create_future()
            await self._data
        policy = self.batch_policy
        deadline = self._oldest_arrival() + policy.max_age_secs
        while (
            not self._closed and self.events < policy.max_events and self.nbytes < policy.max_bytes
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._batch_full = loop.create_future()
            try:
                async with asyncio.timeout(remaining):
                    await self._batch_full
            except TimeoutError:
                break
        return True
