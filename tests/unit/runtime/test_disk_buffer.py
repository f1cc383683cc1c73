from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.records import Record
from sluice.runtime.acks import CommitTracker
from sluice.runtime.buffer import Segment
from sluice.runtime.disk_buffer import DiskBuffer


async def _noop(_: object) -> None:
    return None


def segment(start: int, count: int, kind: str = "k") -> Segment:
    records = [Record(b'{"n":%d}' % i, kind, 1000.0 + i) for i in range(start, start + count)]
    group = CommitTracker(_noop, lambda e: None).open(None)
    return Segment(records, sum(len(r.raw) for r in records), group)


def disk(path: Path, batch_events: int = 10) -> DiskBuffer:
    return DiskBuffer(
        path,
        BufferPolicy(type="disk", max_events=1000, max_bytes=10_000_000),
        BatchPolicy(max_events=batch_events, max_age_secs=0.01),
    )


async def write_and_ack(buffer: DiskBuffer, batches: int) -> list[Record]:
    taken: list[Record] = []
    for _ in range(batches):
        batch = await buffer.next_batch()
        assert batch is not None
        taken += batch.records
        for part in batch.segments:
            part.group.release()
    return taken


async def test_put_releases_the_source_ack_once_on_disk(tmp_path: Path) -> None:
    buffer = disk(tmp_path)
    part = segment(0, 5)
    await buffer.put(part)
    assert part.group.done
    assert buffer.events == 5


async def test_records_come_back_intact_and_in_order(tmp_path: Path) -> None:
    buffer = disk(tmp_path, batch_events=7)
    await buffer.put(segment(0, 5, "ticker"))
    await buffer.put(segment(5, 5, "heartbeat"))
    taken = await write_and_ack(buffer, 2)
    assert [r.raw for r in taken] == [b'{"n":%d}' % i for i in range(10)]
    assert [r.kind for r in taken] == ["ticker"] * 5 + ["heartbeat"] * 5
    assert taken[7].time == 1007.0
    assert buffer.events == 0


async def test_what_was_not_written_survives_a_restart(tmp_path: Path) -> None:
    buffer = disk(tmp_path, batch_events=4)
    for start in range(0, 30, 6):
        await buffer.put(segment(start, 6))
    first = await write_and_ack(buffer, 2)  # 8 records written and acknowledged
    await buffer.next_batch()  # taken but never acknowledged: the process "crashes" here
    await buffer._tracker.flush()
    reopened = disk(tmp_path, batch_events=100)
    assert reopened.events == 0  # not loaded until used
    rest = await write_and_ack(reopened, 1)
    assert [r.raw for r in first + rest] == [b'{"n":%d}' % i for i in range(30)]


async def test_a_torn_frame_from_a_crash_is_cut_off(tmp_path: Path) -> None:
    buffer = disk(tmp_path)
    await buffer.put(segment(0, 3))
    await buffer.put(segment(3, 3))
    log = tmp_path / "1.log"
    with log.open("ab") as file:
        file.write(b"\x50\x00\x00\x00garbage")  # a header promising 80 bytes, then the crash
    reopened = disk(tmp_path)
    rest = await write_and_ack(reopened, 1)
    assert [r.raw for r in rest] == [b'{"n":%d}' % i for i in range(6)]
    await reopened.put(segment(6, 1))  # appends after the cut
    assert [r.raw for r in await write_and_ack(reopened, 1)] == [b'{"n":6}']


async def test_close_without_drain_keeps_the_rest_on_disk(tmp_path: Path) -> None:
    buffer = disk(tmp_path, batch_events=5)
    await buffer.put(segment(0, 20))
    await write_and_ack(buffer, 1)
    buffer.close(drain=False)
    assert await buffer.next_batch() is None
    reopened = disk(tmp_path, batch_events=100)
    rest = await write_and_ack(reopened, 1)
    assert [r.raw for r in rest] == [b'{"n":%d}' % i for i in range(5, 20)]
    assert buffer.volatile_events() == 0


async def test_a_batch_taken_during_an_append_does_not_commit_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = disk(tmp_path, batch_events=100)
    await buffer.put(segment(0, 1))
    real_append = buffer._append
    appended = asyncio.Event()

    def slow_append(frame: bytes) -> None:
        real_append(frame)
        appended_loop.call_soon_threadsafe(appended.set)
        time.sleep(0.2)  # the frame is on disk, not yet registered: a batch is taken meanwhile

    appended_loop = asyncio.get_running_loop()
    monkeypatch.setattr(buffer, "_append", slow_append)
    putting = asyncio.create_task(buffer.put(segment(1, 1)))
    await appended.wait()
    taken = await write_and_ack(buffer, 1)
    await putting
    buffer.close(drain=False)
    assert await buffer.next_batch() is None
    reopened = disk(tmp_path)
    rest = await write_and_ack(reopened, 1)
    assert [r.raw for r in taken + rest] == [b'{"n":0}', b'{"n":1}']


async def test_a_failing_disk_holds_the_put_until_it_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = []
    buffer = DiskBuffer(
        tmp_path,
        BufferPolicy(type="disk", max_events=1000, max_bytes=10_000_000),
        BatchPolicy(max_events=10, max_age_secs=0.01),
        errors.append,
    )
    await buffer.put(segment(0, 2))
    real_write = os.write
    failures = {"left": 2}

    def full_disk(fd: int, data: Any) -> int:
        if failures["left"]:
            failures["left"] -= 1
            real_write(fd, bytes(data[:3]))  # a torn frame, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    part = segment(2, 2)
    await buffer.put(part)  # waits out two failures, then succeeds
    assert part.group.done
    assert len(errors) == 2
    reopened = disk(tmp_path)
    assert [r.raw for r in await write_and_ack(reopened, 1)] == [b'{"n":%d}' % i for i in range(4)]
