"""The Buffer protocol, run against both buffers: what the sink worker may rely on without knowing
which kind it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.records import Record
from sluice.runtime.buffers import Backlog, Buffer, BufferClosed, Segment, build_buffer
from sluice.runtime.ledger import Ledger


async def _noop(_: object) -> None:
    return None


def _segment(start: int, count: int) -> Segment:
    records = [Record(b'{"n":%d}' % i, "k", 1000.0 + i) for i in range(start, start + count)]
    ticket = Ledger(_noop, lambda e: None).open(None)
    return Segment(records, sum(len(r.raw) for r in records), ticket)


@pytest.fixture(params=["memory", "disk"])
def make(request: Any, tmp_path: Path) -> Any:
    def build(max_events: int = 1000, when_full: str = "block", batch_events: int = 10) -> Buffer:
        policy = BufferPolicy.model_validate(
            {"type": request.param, "max_events": max_events, "when_full": when_full}
        )
        batch = BatchPolicy(max_events=batch_events, max_bytes=1_000_000, max_age_secs=0.01)
        return build_buffer(policy, batch, tmp_path / "buffer")

    return build


def _numbers(records: Any) -> list[int]:
    return [orjson.loads(r.raw)["n"] for r in records]


async def test_records_come_out_in_order_in_batches_then_none_once_closed(make: Any) -> None:
    buffer = make(batch_events=10)
    for start in range(0, 25, 5):
        assert await buffer.put(_segment(start, 5))
    assert (buffer.events, buffer.closed, buffer.failing) == (25, False, None)
    buffer.close()
    taken: list[Record] = []
    while (batch := await buffer.next_batch()) is not None:
        assert len(batch.records) <= 10
        taken += batch.records
        for segment in batch.segments:
            segment.ticket.release()
    assert _numbers(taken) == list(range(25))
    assert buffer.events == 0
    await buffer.aclose()
    assert buffer.backlog() == Backlog(0, 0)


async def test_a_put_releases_its_ticket_only_when_the_buffer_is_durable(make: Any) -> None:
    buffer = make()
    segment = _segment(0, 3)
    await buffer.put(segment)
    assert segment.ticket.done is buffer.durable
    assert buffer.volatile_events() == (0 if buffer.durable else 3)
    assert (buffer.disk_bytes() > 0) is buffer.durable
    buffer.close()
    await buffer.aclose()


async def test_a_stop_without_drain_keeps_a_durable_backlog_and_drains_memory(make: Any) -> None:
    buffer = make(batch_events=100)
    await buffer.put(_segment(0, 7))
    buffer.close(drain=False)
    assert buffer.abandoned.is_set() is buffer.durable
    batch = await buffer.next_batch()
    if buffer.durable:
        assert batch is None  # stays on disk for the next start
        assert buffer.backlog() == Backlog(7, sum(len(b'{"n":%d}' % n) for n in range(7)))
    else:
        assert batch is not None and _numbers(batch.records) == list(range(7))
        assert await buffer.next_batch() is None
        await buffer.aclose()
        assert buffer.backlog() == Backlog(0, 0)


async def test_a_full_buffer_drops_by_policy_and_a_closed_one_refuses(make: Any) -> None:
    buffer = make(max_events=5, when_full="drop_newest")
    assert await buffer.put(_segment(0, 5))
    assert not await buffer.put(_segment(5, 1))  # full: dropped
    assert buffer.events == 5
    batch = await buffer.next_batch()
    assert batch is not None and _numbers(batch.records) == list(range(5))
    batch.segments[0].ticket.release()
    buffer.close()
    with pytest.raises(BufferClosed):  # room again, but closed
        await buffer.put(_segment(6, 1))
    assert await buffer.next_batch() is None
    await buffer.aclose()


async def test_aclose_after_giving_up_mid_batch_keeps_what_is_unwritten(make: Any) -> None:
    buffer = make(batch_events=4)
    await buffer.put(_segment(0, 6))
    batch = await buffer.next_batch()
    assert batch is not None and len(batch.records) == 4
    buffer.close(drain=False)
    await buffer.aclose()  # the sink gave the batch up at a stop: it was never written
    expected = Backlog(6, sum(len(b'{"n":%d}' % n) for n in range(6)))
    assert buffer.backlog() == (expected if buffer.durable else Backlog(0, 0))
