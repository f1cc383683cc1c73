from typing import Any

import pytest

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.records import Record
from sluice.runtime.buffers import MemoryBuffer, Segment
from sluice.runtime.ledger import Ledger, TicketReleasedTwice


def _ledger(committed: list[Any], errors: list[BaseException] | None = None) -> Ledger:
    async def commit(token: Any) -> None:
        committed.append(token)

    return Ledger(commit, (errors if errors is not None else []).append)


async def test_commits_only_the_done_prefix_in_order() -> None:
    committed: list[Any] = []
    ledger = _ledger(committed)
    first, second, third = ledger.open(1), ledger.open(2), ledger.open(3)
    second.release()  # done out of order: nothing can be committed yet
    await ledger.flush()
    assert committed == []
    first.release()
    await ledger.flush()
    assert committed == [2]
    child = third.split()
    child.release()
    await ledger.flush()
    assert committed == [2]  # one piece of the third batch still in flight
    third.release()
    await ledger.flush()
    assert committed == [2, 3]
    assert ledger.in_flight == 0


async def test_failed_commit_is_reported_not_raised() -> None:
    errors: list[BaseException] = []

    async def commit(token: Any) -> None:
        raise OSError("disk full")

    ledger = Ledger(commit, errors.append)
    ledger.open("t").release()
    await ledger.flush()
    assert len(errors) == 1


async def test_a_ticket_released_twice_raises_and_commits_nothing_early() -> None:
    committed: list[Any] = []
    ledger = _ledger(committed)
    ticket = ledger.open("a")
    piece = ticket.split()
    ticket.release()
    piece.release()
    with pytest.raises(TicketReleasedTwice):
        piece.release()
    with pytest.raises(TicketReleasedTwice):
        piece.split()
    await ledger.flush()
    assert committed == ["a"]
    assert ledger.completed_batches == 1


async def test_split_children_each_hold_the_batch_until_released() -> None:
    committed: list[Any] = []
    ledger = _ledger(committed)
    root = ledger.open("t")
    children = [root.split() for _ in range(3)]
    root.release()
    for child in children[:-1]:
        child.release()
        assert not root.done
    await ledger.flush()
    assert committed == []
    children[-1].release()
    assert root.done and children[0].done
    await ledger.flush()
    assert committed == ["t"]


async def test_a_segment_split_across_sink_batches_commits_after_both_halves() -> None:
    committed: list[Any] = []
    ledger = _ledger(committed)
    root = ledger.open("batch")
    records = [Record(b'{"n":%d}' % i) for i in range(15)]
    buffer = MemoryBuffer(
        BufferPolicy(max_events=100, max_bytes=10_000),
        BatchPolicy(max_events=10, max_bytes=1_000_000, max_age_secs=0.01),
    )
    await buffer.put(Segment(records, sum(len(r.raw) for r in records), root.split()))
    root.release()  # the router has handed out every piece
    buffer.close()
    first = await buffer.next_batch()
    second = await buffer.next_batch()
    assert first is not None and second is not None
    assert [len(b.records) for b in (first, second)] == [10, 5]
    for segment in first.segments:
        segment.ticket.release()
    await ledger.flush()
    assert committed == []  # the tail is not written yet
    for segment in second.segments:
        segment.ticket.release()
    await ledger.flush()
    assert committed == ["batch"]


async def test_dead_letters_inside_a_batch_hold_the_commit_until_written() -> None:
    committed: list[Any] = []
    ledger = _ledger(committed)
    root = ledger.open("t")
    to_sink = root.split()
    root.release()
    dead_letter = to_sink.split()  # the sink rejected some records of its batch
    to_sink.release()  # the rest is written
    await ledger.flush()
    assert committed == []
    dead_letter.release()  # the dead-letter sink wrote them
    await ledger.flush()
    assert committed == ["t"]


async def test_a_forced_stop_releases_abandoned_pieces_and_commits_only_what_is_before() -> None:
    committed: list[Any] = []
    ledger = _ledger(committed)
    written, abandoned, after = ledger.open(1), ledger.open(2), ledger.open(3)
    written.release()
    stuck = abandoned.split()  # a segment still in a sink's buffer at the forced stop
    abandoned.release()
    await ledger.flush()
    assert committed == [1]
    stuck.release()  # abandoned: counted unwritten by its holder, finished for the ledger
    after.release()
    await ledger.flush()
    assert committed == [1, 3]  # the newest final token wins
    assert ledger.in_flight == 0


async def test_batches_without_a_token_complete_without_a_commit() -> None:
    committed: list[Any] = []
    ledger = _ledger(committed)
    ledger.open(None).release()
    await ledger.flush()
    assert committed == []
    assert ledger.completed_batches == 1
