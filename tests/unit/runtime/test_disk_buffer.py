"""The disk buffer: records survive restarts, a corrupt frame costs only itself (counted), space
is reclaimed as the reader advances, a full disk holds the put and heals, one cursor writer."""

from __future__ import annotations

import asyncio
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.metrics import Metrics
from sluice.records import Record
from sluice.runtime.buffers import BufferClosed, Segment
from sluice.runtime.buffers.disk import MAGIC, DiskBuffer, _Cursor, segment_bytes
from sluice.runtime.ledger import Ledger
from tests.conftest import wait_until
from tests.volumes import fill, small_tmpfs


async def _noop(_: object) -> None:
    return None


def segment(start: int, count: int, kind: str = "k") -> Segment:
    records = [Record(b'{"n":%d}' % i, kind, 1000.0 + i) for i in range(start, start + count)]
    ticket = Ledger(_noop, lambda e: None).open(None)
    return Segment(records, sum(len(r.raw) for r in records), ticket)


class Log:
    """Records log calls as (event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def _record(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    info = warning = error = debug = _record

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.lines if event == name]


def disk(
    path: Path,
    batch_events: int = 10,
    log: Log | None = None,
    metrics: Any = None,
    max_bytes: int = 10_000_000,
    on_error: Any = None,
) -> DiskBuffer:
    return DiskBuffer(
        path,
        BufferPolicy(type="disk", max_events=1_000_000, max_bytes=max_bytes),
        BatchPolicy(max_events=batch_events, max_age_secs=0.01),
        on_error,
        log=log,
        metrics=metrics,
    )


def frame_offsets(log: Path) -> list[tuple[int, int]]:
    """(offset, size) of each frame of a log file written by this version."""
    data = log.read_bytes()
    offsets, offset = [], 0
    while offset < len(data):
        assert data[offset : offset + 4] == MAGIC
        (length,) = struct.unpack_from("<I", data, offset + 4)
        offsets.append((offset, 12 + length))
        offset += 12 + length
    return offsets


def numbers(records: list[Record]) -> list[int]:
    return [orjson.loads(r.raw)["n"] for r in records]


async def write_and_ack(buffer: DiskBuffer, batches: int) -> list[Record]:
    taken: list[Record] = []
    for _ in range(batches):
        batch = await buffer.next_batch()
        assert batch is not None
        taken += batch.records
        for part in batch.segments:
            part.ticket.release()
    return taken


async def test_put_releases_the_source_ack_once_on_disk(tmp_path: Path) -> None:
    buffer = disk(tmp_path)
    part = segment(0, 5)
    await buffer.put(part)
    assert part.ticket.done
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
    await buffer._ledger.flush()
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
    loop = asyncio.get_running_loop()
    appended = asyncio.Event()
    release = threading.Event()

    def held_append(frame: bytes) -> None:
        real_append(frame)
        loop.call_soon_threadsafe(appended.set)
        # the frame is on disk, not yet registered: held here until a batch was taken, written
        # and its cursor persisted (a deterministic interleaving, not a sleep)
        assert release.wait(timeout=30)

    monkeypatch.setattr(buffer, "_append", held_append)
    putting = asyncio.create_task(buffer.put(segment(1, 1)))
    await appended.wait()
    taken = await write_and_ack(buffer, 1)
    await buffer._ledger.flush()
    _, second_frame = frame_offsets(tmp_path / "1.log")
    cursor = orjson.loads((tmp_path / "cursor.json").read_bytes())
    assert numbers(taken) == [0]
    assert cursor == {"file": 1, "offset": second_frame[0], "skip": 0}  # not past frame 2
    release.set()
    await putting
    buffer.close(drain=False)
    assert await buffer.next_batch() is None
    reopened = disk(tmp_path)
    rest = await write_and_ack(reopened, 1)
    assert numbers(taken + rest) == [0, 1]


# -- corruption ------------------------------------------------------------------------------------


async def fill_log(path: Path, frames: int, per_frame: int) -> DiskBuffer:
    buffer = disk(path)
    for n in range(frames):
        await buffer.put(segment(n * per_frame, per_frame))
    buffer.close(drain=False)
    assert await buffer.next_batch() is None
    return buffer


def damage(log: Path, offset: int) -> None:
    data = bytearray(log.read_bytes())
    data[offset] ^= 0xFF
    log.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["payload", "magic", "length"])
async def test_a_corrupt_frame_mid_log_is_skipped_counted_and_the_rest_delivered(
    tmp_path: Path, where: str
) -> None:
    await fill_log(tmp_path, frames=10, per_frame=3)
    log_file = tmp_path / "1.log"
    offsets = frame_offsets(log_file)
    bad_offset, bad_size = offsets[4]
    damage(log_file, bad_offset + {"payload": 20, "magic": 1, "length": 5}[where])
    log = Log()
    metrics = Metrics().component("s", "sink", "file")
    reopened = disk(tmp_path, batch_events=1000, log=log, metrics=metrics)
    taken = await write_and_ack(reopened, 1)
    assert numbers(taken) == [n for n in range(30) if not 12 <= n < 15]  # exactly frame 5 lost
    assert (reopened.corrupt_frames, reopened.corrupt_bytes) == (1, bad_size)
    [line] = log.events("buffer.corrupt_frames_skipped")
    assert line == {"path": str(log_file), "offset": bad_offset, "frames": 1, "bytes": bad_size}
    labels = {"component_id": "s", "component_kind": "sink", "component_type": "file"}
    registry = metrics.metrics.registry
    assert registry.get_sample_value("sluice_buffer_corrupt_frames_total", labels) == 1
    assert registry.get_sample_value("sluice_buffer_corrupt_bytes_total", labels) == bad_size
    assert log_file.stat().st_size == offsets[-1][0] + offsets[-1][1]  # nothing cut off


async def test_a_frame_that_goes_bad_on_disk_while_running_is_skipped_and_counted(
    tmp_path: Path,
) -> None:
    """Bytes changed under a running buffer (after its start-up scan) cost only that frame: the
    read skips it, counts it (log line with file and offset, metric) and the run goes on."""
    log = Log()
    metrics = Metrics().component("s", "sink", "file")
    buffer = disk(tmp_path, batch_events=1000, log=log, metrics=metrics)
    for n in range(10):
        await buffer.put(segment(n * 3, 3))
    log_file = tmp_path / "1.log"
    bad_offset, bad_size = frame_offsets(log_file)[4]
    damage(log_file, bad_offset + 20)
    taken = await write_and_ack(buffer, 1)
    assert numbers(taken) == [n for n in range(30) if not 12 <= n < 15]
    assert (buffer.corrupt_frames, buffer.corrupt_bytes) == (1, bad_size)
    [line] = log.events("buffer.corrupt_frames_skipped")
    assert line == {"path": str(log_file), "offset": bad_offset, "frames": 1, "bytes": bad_size}
    labels = {"component_id": "s", "component_kind": "sink", "component_type": "file"}
    assert metrics.metrics.registry.get_sample_value("sluice_buffer_corrupt_frames_total", labels)
    assert buffer.events == 0


async def test_a_batch_of_only_bad_frames_is_passed_by_the_cursor_and_not_read_again(
    tmp_path: Path,
) -> None:
    """A batch whose every frame went bad is not handed to the sink; the next batch comes, and
    after a restart the bad frame is behind the cursor (nothing delivered twice)."""
    buffer = disk(tmp_path, batch_events=3)
    for n in range(3):
        await buffer.put(segment(n * 3, 3))
    damage(tmp_path / "1.log", frame_offsets(tmp_path / "1.log")[1][0] + 20)
    taken = await write_and_ack(buffer, 2)
    assert numbers(taken) == [0, 1, 2, 6, 7, 8]
    assert buffer.corrupt_frames == 1
    buffer.close(drain=False)
    assert await buffer.next_batch() is None
    reopened = disk(tmp_path, batch_events=3)
    reopened.close(drain=True)
    assert await reopened.next_batch() is None  # nothing left, nothing repeated


@pytest.mark.parametrize(
    "damaged",
    [b"\xff\xfe{garbage", b'{"file": "one", "offset": 0, "skip": 0}', b"[1, 2]", b'{"file": -3}'],
)
async def test_an_unreadable_cursor_replays_what_is_on_disk_instead_of_failing(
    tmp_path: Path, damaged: bytes
) -> None:
    """A damaged cursor file is logged with its path and the backlog is read from the oldest
    segment: nothing lost, the run goes on (repeats are the documented at-least-once cost)."""
    buffer = disk(tmp_path, batch_events=1000)
    for n in range(4):
        await buffer.put(segment(n * 5, 5))
    await write_and_ack(buffer, 1)  # 0..19 written and acknowledged
    await buffer.put(segment(20, 5))
    buffer.close(drain=False)
    assert await buffer.next_batch() is None
    (tmp_path / "cursor.json").write_bytes(damaged)
    log = Log()
    reopened = disk(tmp_path, batch_events=1000, log=log)
    taken = await write_and_ack(reopened, 1)
    assert set(range(20, 25)) <= set(numbers(taken))  # the backlog: all of it
    [line] = log.events("buffer.cursor_unreadable")
    assert line["path"] == str(tmp_path / "cursor.json")


async def test_a_corrupt_last_frame_is_counted_and_a_torn_tail_is_not(tmp_path: Path) -> None:
    await fill_log(tmp_path, frames=4, per_frame=2)
    log_file = tmp_path / "1.log"
    last_offset, last_size = frame_offsets(log_file)[-1]
    damage(log_file, last_offset + 15)  # complete but wrong: corruption
    log = Log()
    reopened = disk(tmp_path, log=log)
    batch = await reopened.next_batch()  # read, never acknowledged: the cursor stays
    assert batch is not None and numbers(list(batch.records)) == list(range(6))
    assert (reopened.corrupt_frames, reopened.corrupt_bytes) == (1, last_size)
    assert log_file.stat().st_size == last_offset
    # now a write cut short: cut off, not counted as corruption
    with log_file.open("ab") as file:
        file.write(MAGIC + struct.pack("<II", 500, 0) + b"half a fra")
    log = Log()
    again = disk(tmp_path, log=log)
    assert numbers(await write_and_ack(again, 1)) == list(range(6))
    assert again.corrupt_frames == 0
    assert [line["bytes"] for line in log.events("buffer.torn_tail_cut")] == [22]


async def test_an_old_format_log_is_still_read_and_new_frames_go_to_a_new_file(
    tmp_path: Path,
) -> None:
    encode = msgspec.msgpack.Encoder().encode
    frames = b""
    for start in (0, 3):
        payload = encode([(b'{"n":%d}' % n, "k", 1000.0 + n) for n in range(start, start + 3)])
        frames += struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    (tmp_path / "1.log").write_bytes(frames)
    (tmp_path / "cursor.json").write_bytes(b'{"file": 1, "offset": 0, "skip": 1}')
    buffer = disk(tmp_path, batch_events=100)
    await buffer.put(segment(6, 2))
    assert numbers(await write_and_ack(buffer, 1)) == [1, 2, 3, 4, 5, 6, 7]
    assert (tmp_path / "2.log").read_bytes()[:4] == MAGIC
    assert (tmp_path / "1.log").read_bytes() == frames  # never appended to


# -- space -----------------------------------------------------------------------------------------


async def test_consumed_segments_are_deleted_as_the_cursor_passes_them(tmp_path: Path) -> None:
    max_bytes = 512 * 1024
    segment_size = segment_bytes(max_bytes)
    assert segment_size == 64 * 1024
    buffer = disk(tmp_path, batch_events=50, max_bytes=max_bytes)
    peak_files = peak_bytes = 0
    written: list[Record] = []
    for start in range(0, 20_000, 100):  # ~0.2 MB of records per round, 4 MB in all
        await buffer.put(segment(start, 100))
        written += await write_and_ack(buffer, 2)
        await buffer._ledger.flush()
        files = list(tmp_path.glob("*.log"))
        peak_files = max(peak_files, len(files))
        peak_bytes = max(peak_bytes, sum(f.stat().st_size for f in files))
    assert numbers(written) == list(range(20_000))
    assert peak_files <= 2
    assert peak_bytes <= 2 * segment_size + 4096
    assert buffer.disk_bytes() == sum(f.stat().st_size for f in tmp_path.glob("*.log"))


async def test_a_drained_stop_leaves_no_log_on_disk_and_the_next_start_goes_on(
    tmp_path: Path,
) -> None:
    buffer = disk(tmp_path, batch_events=7, max_bytes=64 * 1024)
    for start in range(0, 3000, 100):
        await buffer.put(segment(start, 100))
    buffer.close(drain=True)
    written: list[Record] = []
    while (batch := await buffer.next_batch()) is not None:
        written += batch.records
        batch.segments[0].ticket.release()
    assert numbers(written) == list(range(3000))
    assert list(tmp_path.glob("*.log")) == []
    assert (buffer.backlog_events, buffer.backlog_bytes) == (0, 0)
    reopened = disk(tmp_path)
    await reopened.put(segment(5000, 2))
    assert numbers(await write_and_ack(reopened, 1)) == [5000, 5001]


async def test_a_stop_reports_the_backlog_left_on_disk(tmp_path: Path) -> None:
    buffer = disk(tmp_path, batch_events=5)
    await buffer.put(segment(0, 20))
    await write_and_ack(buffer, 1)  # 5 written
    in_flight = await buffer.next_batch()  # 5 taken, never written
    assert in_flight is not None
    buffer.close(drain=False)
    assert await buffer.next_batch() is None
    assert buffer.backlog_events == 15
    assert buffer.backlog_bytes == sum(len(b'{"n":%d}' % n) for n in range(5, 20))


# -- a full disk (a real, small tmpfs) -------------------------------------------------------------


@pytest.fixture
def volume(tmp_path: Path) -> Any:
    with small_tmpfs(tmp_path / "volume", 256 * 1024) as path:
        yield path


async def test_a_full_disk_holds_the_put_names_the_path_and_heals_when_space_returns(
    volume: Path,
) -> None:
    log, errors = Log(), list[BaseException]()
    buffer = disk(volume / "buffer", batch_events=1000, log=log, on_error=errors.append)
    await buffer.put(segment(0, 2))
    filler = fill(volume, leave_bytes=0)
    part = segment(2, 2000)  # ~20 KB: does not fit
    putting = asyncio.create_task(buffer.put(part))
    await wait_until(lambda: buffer.failing is not None)
    path = str(volume / "buffer" / "1.log")
    assert buffer.failing == f"disk buffer {path}: No space left on device"
    first = log.events("buffer.write.failing")[0]
    assert (first["path"], first["errno"]) == (path, "ENOSPC")
    assert not putting.done() and not part.ticket.done  # held: the source waits
    filler.unlink()
    await putting
    assert part.ticket.done and buffer.failing is None
    assert log.events("buffer.write.recovered")[0]["path"] == path
    assert errors and all(isinstance(e, OSError) for e in errors)
    reopened = disk(volume / "buffer", batch_events=10_000)
    assert numbers(await write_and_ack(reopened, 1)) == list(range(2002))


async def test_a_disk_filled_by_the_buffer_itself_heals_as_the_reader_drains(
    volume: Path,
) -> None:
    # the buffer's limit is far above the volume: the disk fills first, with records the
    # reader then writes; the space they held must come back without anyone's help
    buffer = disk(volume / "buffer", batch_events=500, max_bytes=100_000_000)
    put_count = 0
    putting: asyncio.Task[bool] | None = None
    while putting is None or not buffer.failing:
        if putting is not None:
            await putting
        putting = asyncio.create_task(buffer.put(segment(put_count, 500)))
        put_count += 500
        task = putting

        def settled(task: asyncio.Task[Any] = task) -> bool:
            return task.done() or buffer.failing is not None

        await wait_until(settled)
    assert buffer.failing is not None and "No space left on device" in buffer.failing
    written: list[Record] = []
    for _ in range(2000):  # bounded: the put must get through while the reader drains
        if putting.done():
            break
        if buffer.events:
            written += await write_and_ack(buffer, 1)
            await buffer._ledger.flush()
        else:
            await asyncio.wait({putting}, timeout=0.05)
    assert putting.done() and buffer.failing is None
    while buffer.events:
        written += await write_and_ack(buffer, 1)
    assert numbers(written) == list(range(put_count))


# -- the cursor ------------------------------------------------------------------------------------


async def test_an_older_cursor_never_replaces_a_newer_one(tmp_path: Path) -> None:
    buffer = disk(tmp_path)
    await buffer.put(segment(0, 1))
    buffer._write_cursor(_Cursor(1, 500, 2))
    buffer._write_cursor(_Cursor(1, 500, 1))
    buffer._write_cursor(_Cursor(1, 100, 9))
    assert orjson.loads((tmp_path / "cursor.json").read_bytes()) == {
        "file": 1,
        "offset": 500,
        "skip": 2,
    }


class WatchedLock:
    """A lock that says when a second thread waits for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self) -> None:
        if not self.lock.acquire(blocking=False):
            self.contended.set()
            self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


async def test_two_cursor_writers_never_interleave_and_the_newer_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = disk(tmp_path)
    await buffer.put(segment(0, 1))
    lock = WatchedLock()
    monkeypatch.setattr(buffer, "_cursor_lock", lock)
    inside = threading.Event()
    real_reclaim = buffer._reclaim

    def held_reclaim(cursor: _Cursor) -> None:
        if cursor.offset == 900:  # the newer writer, first in: held until the other one waits
            inside.set()
            assert lock.contended.wait(timeout=30)
        real_reclaim(cursor)

    monkeypatch.setattr(buffer, "_reclaim", held_reclaim)
    newer = asyncio.create_task(asyncio.to_thread(buffer._write_cursor, _Cursor(1, 900, 0)))
    await asyncio.to_thread(inside.wait, 30)
    older = asyncio.create_task(asyncio.to_thread(buffer._write_cursor, _Cursor(1, 100, 0)))
    await asyncio.gather(newer, older)  # neither raised (one temporary file, one writer)
    assert lock.contended.is_set()
    assert orjson.loads((tmp_path / "cursor.json").read_bytes())["offset"] == 900
    assert not (tmp_path / "cursor.tmp").exists()


async def test_a_drain_persists_the_cursor_without_errors(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    buffer = disk(tmp_path, batch_events=3, on_error=errors.append)
    for start in range(0, 300, 10):
        await buffer.put(segment(start, 10))
    buffer.close(drain=True)
    while (batch := await buffer.next_batch()) is not None:
        batch.segments[0].ticket.release()
    assert errors == []


async def test_a_restart_after_the_cursors_file_was_deleted_never_reuses_its_number(
    tmp_path: Path,
) -> None:
    # a crash between deleting the consumed log and writing the cursor past it
    buffer = disk(tmp_path)
    await buffer.put(segment(0, 3))
    assert numbers(await write_and_ack(buffer, 1)) == [0, 1, 2]
    await buffer._ledger.flush()  # the process dies here, after deleting 1.log
    assert orjson.loads((tmp_path / "cursor.json").read_bytes())["offset"] > 0
    (tmp_path / "1.log").unlink()
    reopened = disk(tmp_path)
    await reopened.put(segment(3, 2))
    assert (tmp_path / "2.log").exists() and not (tmp_path / "1.log").exists()
    assert numbers(await write_and_ack(reopened, 1)) == [3, 4]
    reopened.close(drain=False)
    assert await reopened.next_batch() is None
    again = disk(tmp_path)
    await again.put(segment(5, 1))
    assert numbers(await write_and_ack(again, 1)) == [5]


async def test_a_put_held_by_a_full_disk_ends_when_the_buffer_closes(volume: Path) -> None:
    buffer = disk(volume / "buffer")
    await buffer.put(segment(0, 1))
    fill(volume, leave_bytes=0)
    part = segment(1, 5000)
    putting = asyncio.create_task(buffer.put(part))
    await wait_until(lambda: buffer.failing is not None)
    buffer.close(drain=False)
    assert await buffer.next_batch() is None  # waits for the put to give up
    with pytest.raises(BufferClosed):
        await putting
    assert not part.ticket.done  # never acknowledged: the source still holds it
    assert buffer.backlog_events == 1


async def test_a_cursor_beyond_the_end_of_its_file_does_not_hide_new_frames(
    tmp_path: Path,
) -> None:
    buffer = disk(tmp_path)
    await buffer.put(segment(0, 3))
    assert numbers(await write_and_ack(buffer, 1)) == [0, 1, 2]
    await buffer._ledger.flush()  # the process dies here
    (tmp_path / "1.log").write_bytes(b"")  # and the file is found shorter than the cursor
    reopened = disk(tmp_path)
    await reopened.put(segment(3, 1))
    reopened.close(drain=False)
    assert await reopened.next_batch() is None
    again = disk(tmp_path)
    assert numbers(await write_and_ack(again, 1)) == [3]
