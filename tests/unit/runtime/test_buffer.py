import asyncio
import time

import pytest

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.records import Record
from sluice.runtime.buffers import MemoryBuffer, Segment
from sluice.runtime.ledger import Ledger


async def _noop(_: object) -> None:
    return None


def _segment(count: int, size: int = 10, start: int = 0) -> Segment:
    ledger = Ledger(_noop, lambda e: None)
    records = [
        Record(b"x" * (size - 1) + str(i % 10).encode()) for i in range(start, start + count)
    ]
    return Segment(records, size * count, ledger.open(None))


def _buffer(
    max_events: int = 100,
    max_bytes: int = 10_000,
    when_full: str = "block",
    batch_events: int = 10,
    batch_bytes: int = 1_000_000,
    age: float = 0.05,
) -> MemoryBuffer:
    return MemoryBuffer(
        BufferPolicy(max_events=max_events, max_bytes=max_bytes, when_full=when_full),
        BatchPolicy(max_events=batch_events, max_bytes=batch_bytes, max_age_secs=age),
    )


async def test_batch_is_cut_at_max_events_and_keeps_order() -> None:
    buffer = _buffer(batch_events=10)
    segment = _segment(25)
    await buffer.put(segment)
    first = await buffer.next_batch()
    second = await buffer.next_batch()
    assert first is not None and second is not None
    assert list(first.records) == list(segment.records[:10])
    assert list(second.records) == list(segment.records[10:20])
    assert buffer.events == 5


async def test_batch_is_cut_at_max_bytes() -> None:
    buffer = _buffer(batch_events=1000, batch_bytes=55)
    await buffer.put(_segment(3, size=20))
    await buffer.put(_segment(3, size=20))
    batch = await buffer.next_batch()
    assert batch is not None
    assert len(batch.records) == 3
    assert batch.nbytes == 60  # the first segment whole; the next would pass the limit


async def test_partial_batch_waits_for_max_age() -> None:
    buffer = _buffer(batch_events=100, age=0.2)
    segment = _segment(3)
    await buffer.put(segment)
    batch = await asyncio.wait_for(buffer.next_batch(), 30)
    # a lower bound only (a loaded machine makes the batch later, never earlier); the timer may
    # fire up to the loop's clock resolution early
    assert time.monotonic() - segment.arrived >= 0.2 - 0.01
    assert batch is not None and list(batch.records) == list(segment.records)
    assert buffer.events == 0


async def test_full_batch_does_not_wait_for_age() -> None:
    buffer = _buffer(batch_events=10, age=30)
    waiter = asyncio.create_task(buffer.next_batch())
    await asyncio.sleep(0.01)
    await buffer.put(_segment(12))
    batch = await asyncio.wait_for(waiter, 1.0)
    assert batch is not None and len(batch.records) == 10


async def test_put_blocks_when_full_until_space_is_freed() -> None:
    buffer = _buffer(max_events=20, batch_events=10)
    await buffer.put(_segment(20))
    blocked = asyncio.create_task(buffer.put(_segment(5)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    await buffer.next_batch()
    assert await asyncio.wait_for(blocked, 1.0) is True
    assert buffer.events == 15


async def test_drop_newest_refuses_when_full() -> None:
    buffer = _buffer(max_events=20, when_full="drop_newest")
    assert await buffer.put(_segment(20)) is True
    assert await buffer.put(_segment(5)) is False
    assert buffer.events == 20


async def test_close_drains_then_ends() -> None:
    buffer = _buffer(batch_events=10, age=30)
    await buffer.put(_segment(4))
    buffer.close()
    batch = await buffer.next_batch()
    assert batch is not None and len(batch.records) == 4
    assert await buffer.next_batch() is None


async def test_split_segment_counts_one_more_ack_piece() -> None:
    buffer = _buffer(batch_events=10)
    segment = _segment(15)
    ticket = segment.ticket
    await buffer.put(segment)
    assert ticket.pending == 1
    await buffer.next_batch()
    assert ticket.pending == 2  # head in the batch, tail still buffered


@pytest.mark.parametrize("when_full", ["block", "drop_newest"])
async def test_limits_hold_within_one_segment(when_full: str) -> None:
    buffer = _buffer(max_events=50, when_full=when_full, batch_events=10)
    for _ in range(5):
        task = asyncio.create_task(buffer.put(_segment(30)))
        await asyncio.sleep(0.01)
        task.cancel()
    assert buffer.events <= 50 + 30
