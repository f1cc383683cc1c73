"""A sink buffer kept on disk: it survives a crash and a restart.

``buffer: {type: disk}`` puts each segment into an append-only log under
``<data_dir>/sinks/<id>/buffer/`` before the source hears it is done, so a source that cannot be
replayed (a websocket) loses nothing to a crash or a restart of sluice: what was buffered is written
after the restart. A reader cursor (``cursor.json``: file, offset, records already taken from that
frame) advances, in order, once a batch is written by the sink (and its dead letters, if any, by the
dead-letter sink).

Layout: log files ``<n>.log`` (segments) of frames ``[magic "\\xd5SB\\x02"][u32 payload length]
[u32 crc32 of length and payload][payload]``, the payload a msgpack list of ``[raw, kind, time]``.
A segment is rolled once it reaches an eighth of ``max_bytes`` (64 KiB to 64 MiB), and a segment is
deleted as soon as the acknowledged cursor has passed its end, so the disk holds about ``max_bytes``
plus two segments. After a drained stop nothing but the cursor stays.

On start the log is scanned from the cursor. A frame whose header or checksum is wrong is skipped:
the scan looks for the next offset where the magic starts a frame whose checksum holds, and counts
what it skipped (frames, bytes; a warning names the file and offset). A bad tail with nothing valid
after it (a crash in mid-write) is cut off. Logs written before the magic existed (frames
``[u32 length][u32 crc32][payload]``) are still read; in such a file a bad frame still ends the file,
and new frames go to a new segment.

A write that fails (a full disk) holds the put, as a full buffer does, marks the buffer failing
(the sink is not ready, the reason names the file) and is retried with backoff until it succeeds;
the sink keeps draining meanwhile, and the segments it finishes are deleted, which is often what
frees the space.

Writes go to the page cache (a process crash loses nothing); ``fsync_interval_secs`` bounds what a
power cut can lose. On a stop, a disk buffer does not drain: the in-flight batch is finished and the
rest stays on disk for the next start. Delivery stays at-least-once: a crash between a sink write
and the cursor update repeats the batches written since the last cursor update.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import orjson
import structlog

from sluice.config.models import BatchPolicy, BufferPolicy, RetryPolicy
from sluice.records import Record
from sluice.runtime.buffers.base import Backlog, Batch, BatchingQueue, BufferClosed, Segment
from sluice.runtime.ledger import Ledger, Ticket
from sluice.runtime.retry import Cadence, Retrying, retrying

__all__ = ["MAGIC", "DiskBuffer", "encode_frame", "read_frames", "segment_bytes"]

MAGIC = b"\xd5SB\x02"
_HEADER = struct.Struct("<4sII")
_LENGTH = struct.Struct("<I")
_V1_HEADER = struct.Struct("<II")
_MIN_SEGMENT = 64 * 1024
_MAX_SEGMENT = 64 * 1024 * 1024
_FULL = (errno.ENOSPC, errno.EDQUOT)
_APPEND_RETRY = RetryPolicy(initial_backoff_secs=0.1, max_backoff_secs=5.0)
_APPEND_CADENCE = Cadence(first=1, every_secs=30.0)
"""A failing append is a warning at once, then at most every 30 s (else debug)."""
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[bytes, str, float | None]]).decode

_Rows = list[tuple[bytes, str, float | None]]


def segment_bytes(max_bytes: int) -> int:
    """Size at which a log segment is rolled: an eighth of the buffer, 64 KiB to 64 MiB."""
    return max(_MIN_SEGMENT, min(_MAX_SEGMENT, max_bytes // 8))


def encode_frame(payload: bytes) -> bytes:
    """One frame: magic, payload length, crc32 of the length and the payload, payload."""
    length = _LENGTH.pack(len(payload))
    return MAGIC + length + _LENGTH.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


@dataclass(frozen=True, order=True)
class _Cursor:
    file: int
    offset: int
    skip: int
    """Records of the frame at ``offset`` already taken."""


@dataclass
class _Frame:
    file: int
    offset: int
    size: int
    """Header plus payload."""
    events: int
    nbytes: int
    arrived: float
    header: int = _HEADER.size


def _frame_at(data: bytes, offset: int) -> tuple[int, _Rows] | None:
    """The end and rows of a valid frame starting at ``offset``, or None."""
    if offset + _HEADER.size > len(data):
        return None
    magic, length, crc = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if magic != MAGIC or end > len(data):
        return None
    payload = data[offset + _HEADER.size : end]
    if zlib.crc32(payload, zlib.crc32(_LENGTH.pack(length))) != crc:
        return None
    try:
        return end, _decode(payload)
    except msgspec.DecodeError:
        return None


def read_frames(data: bytes) -> Iterator[tuple[int, int, _Rows]]:
    """Offset, size and rows of each valid frame of a log file's bytes (this format), in order,
    skipping what is corrupt: for tools and tests that look inside a buffer."""
    offset: int | None = 0
    while offset is not None and offset < len(data):
        found = _frame_at(data, offset)
        if found is None:
            offset = _next_frame(data, offset + 1)
            continue
        end, rows = found
        yield offset, end - offset, rows
        offset = end


def _next_frame(data: bytes, start: int) -> int | None:
    """The first offset at or after ``start`` where a valid frame begins."""
    found = data.find(MAGIC, start)
    while found != -1:
        if _frame_at(data, found) is not None:
            return found
        found = data.find(MAGIC, found + 1)
    return None


def _is_complete_frame(data: bytes, offset: int) -> bool:
    """A header with the magic whose payload is all there (its checksum failed): corruption,
    not a write cut short by a crash."""
    if offset + _HEADER.size > len(data):
        return False
    magic, length, _ = _HEADER.unpack_from(data, offset)
    return bool(magic == MAGIC and offset + _HEADER.size + length <= len(data))


class DiskBuffer(BatchingQueue):
    """The :class:`~sluice.runtime.buffers.base.Buffer` protocol, backed by files."""

    durable: ClassVar[bool] = True

    def __init__(
        self,
        directory: Path,
        policy: BufferPolicy,
        batch: BatchPolicy,
        on_error: Any = None,
        *,
        log: Any = None,
        metrics: Any = None,
    ) -> None:
        super().__init__(policy, batch)
        self.directory = directory
        self.log = log if log is not None else structlog.get_logger("sluice.disk_buffer")
        self._metrics = metrics
        self._frames: deque[_Frame] = deque()
        self._skip = 0
        self._write_file = 1
        self._write_fd: int | None = None
        self._write_offset = 0
        self._segment_bytes = segment_bytes(policy.max_bytes)
        self._sealed: dict[int, int] = {}
        """Size of each log file no longer written to, by number."""
        self._legacy: set[int] = set()
        """Files in the format before the magic."""
        self._first_file = 1
        self._files_lock = threading.Lock()
        self._cursor_lock = threading.Lock()
        self._persisted: _Cursor | None = None
        self._acked = _Cursor(1, 0, 0)
        self._roll_wanted = False
        self._drain = True
        self._opened = False
        self._finished = False
        self._open_lock = asyncio.Lock()
        self._reported_bad: set[tuple[int, int]] = set()
        """Frames found bad at run time, by (file, offset): counted once however they are split."""
        self._on_error = on_error or (lambda exc: None)
        self._ledger = Ledger(self._persist_cursor, self._cursor_failed)
        self._end = _Cursor(1, 0, 0)
        self._ledger_task: asyncio.Task[None] | None = None
        self._outstanding: deque[tuple[Ticket, int, int]] = deque()
        """Batches taken and not yet known written: ticket, records, bytes."""
        self._synced_at = time.monotonic()
        self._append_lock = asyncio.Lock()
        self.backlog_events = 0
        self.backlog_bytes = 0
        """What stays on disk for the next start, set when the buffer finishes."""

    # -- opening and recovery ----------------------------------------------------------------------

    async def _ensure_open(self) -> None:
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                await asyncio.to_thread(self._recover)
                self._opened = True
                self._ledger_task = asyncio.get_running_loop().create_task(
                    self._ledger.run(), name=f"disk-buffer:{self.directory}"
                )

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cursor = self._read_cursor()
        self._persisted = self._acked = cursor
        files = sorted(int(p.stem) for p in self.directory.glob("*.log") if p.stem.isdigit())
        now = time.monotonic()
        kept: list[int] = []
        for number in files:
            path = self.directory / f"{number}.log"
            if number < cursor.file:
                path.unlink(missing_ok=True)
                continue
            kept.append(number)
            data = path.read_bytes()
            start = min(cursor.offset, len(data)) if number == cursor.file else 0
            if data[:4] != MAGIC and data:
                self._legacy.add(number)
                end = self._scan_legacy(number, data, start, now)
            else:
                end = self._scan(number, data, start, now)
            if end < len(data):
                with path.open("r+b") as file:
                    file.truncate(end)
            self._sealed[number] = end
        if (
            self._frames
            and self._frames[0].file == cursor.file
            and self._frames[0].offset == cursor.offset
        ):
            self._skip = cursor.skip
            first = self._frames[0]
            rows = (self._read_rows(first) or [])[: self._skip]
            first.events -= self._skip
            first.nbytes -= sum(len(r[0]) for r in rows)
        self.events = sum(f.events for f in self._frames)
        self.nbytes = sum(f.nbytes for f in self._frames)
        self._write_file = max([*kept, cursor.file, 1])
        if self._sealed.get(cursor.file, 0) < cursor.offset or (
            cursor.file not in kept and cursor.skip
        ):
            # the cursor's file is gone (consumed and deleted) or shorter than the cursor: never
            # append under its number, where the cursor's offset would skip the new frames
            self._write_file = max(self._write_file, cursor.file + 1)
        if self._write_file in self._legacy:  # new frames never go into an old-format file
            self._write_file += 1
        self._sealed.pop(self._write_file, None)
        self._first_file = min([*kept, self._write_file])
        path = self.directory / f"{self._write_file}.log"
        self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._write_offset = os.fstat(self._write_fd).st_size
        self._end = _Cursor(self._write_file, self._write_offset, 0)
        if self.corrupt_frames and self._metrics is not None:
            self._metrics.buffer_corrupt_frames.inc(self.corrupt_frames)
            self._metrics.buffer_corrupt_bytes.inc(self.corrupt_bytes)

    def _scan(self, number: int, data: bytes, offset: int, now: float) -> int:
        """Register the valid frames of one file from ``offset``, skipping corrupt ones; returns
        where the valid data ends (a bad tail after it is cut off)."""
        path = self.directory / f"{number}.log"
        while offset < len(data):
            found = _frame_at(data, offset)
            if found is not None:
                end, rows = found
                self._register(number, offset, end - offset, rows, now)
                offset = end
                continue
            resume = _next_frame(data, offset + 1)
            if resume is None:
                if _is_complete_frame(data, offset):
                    self._corrupt(path, offset, len(data) - offset, 1)
                else:
                    self.log.warning(
                        "buffer.torn_tail_cut",
                        path=str(path),
                        offset=offset,
                        bytes=len(data) - offset,
                        reason="a write cut short by a crash",
                    )
                return offset
            frames = max(1, data.count(MAGIC, offset, resume))
            self._corrupt(path, offset, resume - offset, frames)
            offset = resume
        return offset

    def _scan_legacy(self, number: int, data: bytes, offset: int, now: float) -> int:
        """Frames without the magic: a bad frame ends the file (it cannot be resynced)."""
        while offset + _V1_HEADER.size <= len(data):
            length, crc = _V1_HEADER.unpack_from(data, offset)
            start, end = offset + _V1_HEADER.size, offset + _V1_HEADER.size + length
            payload = data[start:end]
            if end > len(data) or zlib.crc32(payload) != crc:
                break
            self._register(number, offset, end - offset, _decode(payload), now, _V1_HEADER.size)
            offset = end
        if offset < len(data):
            self.log.warning(
                "buffer.torn_tail_cut",
                path=str(self.directory / f"{number}.log"),
                offset=offset,
                bytes=len(data) - offset,
                reason="old-format log: a bad frame ends the file",
            )
        return offset

    def _register(
        self,
        number: int,
        offset: int,
        size: int,
        rows: _Rows,
        now: float,
        header: int = _HEADER.size,
    ) -> None:
        nbytes = sum(len(r[0]) for r in rows)
        self._frames.append(_Frame(number, offset, size, len(rows), nbytes, now, header))

    def _corrupt(self, path: Path, offset: int, nbytes: int, frames: int) -> None:
        self.corrupt_frames += frames
        self.corrupt_bytes += nbytes
        self.log.warning(
            "buffer.corrupt_frames_skipped",
            path=str(path),
            offset=offset,
            frames=frames,
            bytes=nbytes,
        )

    def _read_cursor(self) -> _Cursor:
        """The persisted cursor; a missing one is the start. One that cannot be read (damaged,
        not ours) is logged and replaced by the oldest position still on disk (file 0 precedes
        every segment): records may be written again, none is lost."""
        path = self.directory / "cursor.json"
        try:
            data = orjson.loads(path.read_bytes())
            cursor = _Cursor(int(data["file"]), int(data["offset"]), int(data["skip"]))
        except FileNotFoundError:
            return _Cursor(1, 0, 0)
        except (ValueError, TypeError, KeyError) as exc:  # orjson's JSONDecodeError is a ValueError
            self.log.warning(
                "buffer.cursor_unreadable",
                path=str(path),
                error=str(exc),
                action="replaying from the oldest segment on disk (repeats possible, no loss)",
            )
            return _Cursor(0, 0, 0)
        if min(cursor.file, cursor.offset, cursor.skip) < 0:
            self.log.warning("buffer.cursor_unreadable", path=str(path), error="negative position")
            return _Cursor(0, 0, 0)
        return cursor

    # -- the Buffer protocol ------------------------------------------------------------------------

    def volatile_events(self) -> int:
        """Records that would be lost if the process stopped now: none, they are on disk."""
        return 0

    def backlog(self) -> Backlog:
        return Backlog(self.backlog_events, self.backlog_bytes)

    async def aclose(self) -> None:
        """Persist the cursor and close the log (what is held stays for the next start)."""
        await self._ensure_open()
        await self._finish()

    def disk_bytes(self) -> int:
        """Bytes of log files on disk now."""
        with self._files_lock:
            return sum(self._sealed.values()) + self._write_offset

    def _has_data(self) -> bool:
        return bool(self._frames)

    def _oldest_arrival(self) -> float:
        return self._frames[0].arrived

    async def put(self, segment: Segment) -> bool:
        """Append ``segment`` to the log; its acknowledgement piece is released once it is there."""
        await self._ensure_open()
        if not await self._make_room():
            return False
        records = segment.records
        frame = encode_frame(_encode([(r.raw, r.kind, r.time) for r in records]))
        async with self._append_lock:  # one writer at a time keeps offsets exact
            if self._write_fd is None:  # the buffer finished while this put waited
                raise BufferClosed("buffer closed")
            await self._append_retrying(frame)
            self._frames.append(
                _Frame(
                    self._write_file,
                    self._write_offset - len(frame),
                    len(frame),
                    len(records),
                    segment.nbytes,
                    segment.arrived,
                )
            )
            # where a reader that has taken everything stands: moved only once the frame is
            # registered, so a batch taken meanwhile cannot commit past a frame it did not see
            self._end = _Cursor(self._write_file, self._write_offset, 0)
        self._added(len(records), segment.nbytes)
        segment.ticket.release()  # durable now: the source may move on
        return True

    async def _append_retrying(self, frame: bytes) -> None:
        """Append, waiting out a full or failing disk (the source waits meanwhile, as when the
        buffer is full); raises BufferClosed if the pipeline stops without it."""
        retry: Retrying | None = None
        path = ""
        while True:
            try:
                await asyncio.to_thread(self._append, frame)
            except OSError as exc:
                if self._closed:
                    raise BufferClosed(f"buffer closed while its disk failed: {exc}") from exc
                if retry is None:
                    path = str(self.directory / f"{self._write_file}.log")
                    retry = retrying(
                        _APPEND_RETRY, self.log, "buffer.write.failing", cadence=_APPEND_CADENCE
                    )
                if exc.errno in _FULL:
                    self._roll_wanted = True  # lets the consumed part of this file be deleted
                self.failing = f"disk buffer {path}: {exc.strerror or exc}"
                self._on_error(exc)
                delay = retry.failed(
                    exc,
                    path=path,
                    error=exc.strerror or str(exc),
                    errno=errno.errorcode.get(exc.errno or 0, exc.errno),
                    buffered_records=self.events,
                    disk_bytes=self.disk_bytes(),
                )
                await asyncio.sleep(delay)
                continue
            if retry is not None:
                self.failing = None
                retry.recovered("buffer.write.recovered", path=path, attempts=retry.attempt)
            return

    def _append(self, frame: bytes) -> None:
        if self._write_offset >= self._segment_bytes or (
            self._roll_wanted and self._write_offset > 0
        ):
            self._roll()
        assert self._write_fd is not None
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self._write_fd, view) :]
        except OSError:
            # leave no torn frame in the middle of the log: later frames' offsets depend on it
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_fd, self._write_offset)
            raise
        self._roll_wanted = False
        self._write_offset += len(frame)
        interval = self.policy.fsync_interval_secs
        if interval is not None and time.monotonic() - self._synced_at >= interval:
            os.fsync(self._write_fd)
            self._synced_at = time.monotonic()

    def _roll(self) -> None:
        """Start the next segment; the one before is deleted once the cursor has passed it."""
        assert self._write_fd is not None
        path = self.directory / f"{self._write_file + 1}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.close(self._write_fd)
        with self._files_lock:
            self._sealed[self._write_file] = self._write_offset
            self._write_fd = fd
            self._write_file += 1
            self._write_offset = 0
        self._reclaim(self._acked)

    def _reclaim(self, cursor: _Cursor) -> None:
        """Delete the segments that ``cursor`` has passed (they hold only written records)."""
        with self._files_lock:
            number = self._first_file
            while number < self._write_file:
                size = self._sealed.get(number, 0)
                if number < cursor.file or (number == cursor.file and cursor.offset >= size):
                    (self.directory / f"{number}.log").unlink(missing_ok=True)
                    self._sealed.pop(number, None)
                    number += 1
                else:
                    break
            self._first_file = number

    def close(self, drain: bool = True) -> None:
        """No more puts. With ``drain``, ``next_batch`` returns what is held, then None; without,
        it returns None at once and what is held stays on disk for the next start."""
        self._drain = drain
        if not drain:
            self.abandoned.set()
        super().close(drain)

    async def next_batch(self) -> Batch | None:
        await self._ensure_open()
        while True:
            if (self._closed and not self._drain) or not await self._wait_for_batch():
                await self._finish()
                return None
            if self._closed and not self._drain:
                await self._finish()
                return None
            batch = await self._take()
            if batch is not None:
                return batch
            # every frame of that batch went bad on disk since it was appended: counted, skipped

    async def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._ledger.flush()
        if self._ledger_task is not None:
            self._ledger_task.cancel()
        async with self._append_lock:  # a put still appending (a full disk) ends first
            await self._close_log()

    async def _close_log(self) -> None:
        if self._write_fd is not None:
            fd, self._write_fd = self._write_fd, None
            try:
                await asyncio.to_thread(os.fsync, fd)
            except OSError as exc:
                self.log.warning(
                    "buffer.fsync_failed",
                    path=str(self.directory / f"{self._write_file}.log"),
                    error=str(exc),
                )
                self._on_error(exc)
            finally:
                os.close(fd)
        unacked = [
            (events, nbytes) for ticket, events, nbytes in self._outstanding if not ticket.done
        ]
        self.backlog_events = self.events + sum(events for events, _ in unacked)
        self.backlog_bytes = self.nbytes + sum(nbytes for _, nbytes in unacked)
        if not self._frames and self._ledger.in_flight == 0:
            # everything written: nothing of the log needs to stay
            done = _Cursor(self._write_file + 1, 0, 0)
            with self._files_lock:
                self._sealed[self._write_file] = self._write_offset
                self._write_file += 1
                self._write_offset = 0
            try:
                await asyncio.to_thread(self._write_cursor, done)
            except OSError as exc:
                self._cursor_failed(exc)

    async def _take(self) -> Batch | None:
        """Plan the batch here (the state belongs to the loop), read its frames in a thread."""
        policy = self.batch_policy
        plan: list[tuple[_Frame, int, int]] = []  # frame, records to skip, records to take
        events = 0
        nbytes_estimate = 0
        while self._frames and events < policy.max_events and nbytes_estimate < policy.max_bytes:
            frame = self._frames[0]
            count = min(frame.events, policy.max_events - events)
            plan.append((frame, self._skip, count))
            events += count
            nbytes_estimate += frame.nbytes * count // max(frame.events, 1)
            if count == frame.events:
                self._frames.popleft()
                self._skip = 0
            else:
                self._skip += count
                frame.events -= count
                break
        if self._frames:
            head = self._frames[0]
            cursor = _Cursor(head.file, head.offset, self._skip)
        else:
            cursor = self._end
        ticket = self._ledger.open(cursor)
        parts = await asyncio.to_thread(self._read_plan, plan)
        records: list[Record] = []
        lost_events = lost_bytes = share = 0
        for (frame, _, count), part in zip(plan, parts, strict=True):
            if part is None:  # went bad on disk after the start-up scan: its records are lost
                share = min(frame.nbytes, frame.nbytes * count // max(frame.events, count, 1))
                lost_events += count
                lost_bytes += share
                self._corrupt_at_run_time(frame)
                continue
            records += [Record(raw, kind, t) for raw, kind, t in part]
        nbytes = sum([len(r.raw) for r in records])
        last_frame, last_part = plan[-1][0], parts[-1]
        if self._frames and self._frames[0] is last_frame:  # partly taken: it keeps the rest
            if last_part is None:
                last_frame.nbytes -= share  # an estimate: the bad bytes cannot be measured
            else:
                last_frame.nbytes -= sum(len(row[0]) for row in last_part)
        self._removed(len(records) + lost_events, nbytes + lost_bytes)
        if not records:
            ticket.release()  # nothing to write: the cursor may pass the bad frames
            return None
        self._outstanding.append((ticket, len(records), nbytes))
        while self._outstanding and self._outstanding[0][0].done:
            self._outstanding.popleft()
        return Batch([Segment(records, nbytes, ticket)], records, nbytes)

    def _read_plan(self, plan: list[tuple[_Frame, int, int]]) -> list[_Rows | None]:
        """The rows of each planned piece; None for a frame whose bytes no longer hold."""
        parts: list[_Rows | None] = []
        for frame, skip, count in plan:
            rows = self._read_rows(frame)
            parts.append(None if rows is None else rows[skip : skip + count])
        return parts

    def _read_rows(self, frame: _Frame) -> _Rows | None:
        """A frame's rows, read again from its file; None when its bytes no longer pass the
        checksum or do not decode (changed on disk since they were scanned or appended)."""
        try:
            fd = os.open(self.directory / f"{frame.file}.log", os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, frame.size, frame.offset)
            finally:
                os.close(fd)
        except OSError:
            return None
        if frame.header == _HEADER.size:
            found = _frame_at(data, 0)
            return None if found is None or found[0] != frame.size else found[1]
        try:  # a frame in the format before the magic (its checksum was checked by the scan)
            return _decode(data[frame.header :])
        except msgspec.DecodeError:
            return None

    def _corrupt_at_run_time(self, frame: _Frame) -> None:
        """Count a frame found bad when read for a batch (once, however it was split)."""
        key = (frame.file, frame.offset)
        if key in self._reported_bad:
            return
        self._reported_bad.add(key)
        self._corrupt(self.directory / f"{frame.file}.log", frame.offset, frame.size, 1)
        if self._metrics is not None:
            self._metrics.buffer_corrupt_frames.inc()
            self._metrics.buffer_corrupt_bytes.inc(frame.size)

    # -- the cursor --------------------------------------------------------------------------------

    async def _persist_cursor(self, cursor: _Cursor) -> None:
        self._acked = max(self._acked, cursor)
        await asyncio.to_thread(self._write_cursor, cursor)

    def _write_cursor(self, cursor: _Cursor) -> None:
        """The one way the cursor is written: one thread at a time, never older over newer;
        consumed segments are deleted first (on a full disk that makes room for the cursor)."""
        with self._cursor_lock:
            if self._persisted is not None and cursor <= self._persisted:
                return
            self._reclaim(cursor)
            tmp = self.directory / "cursor.tmp"
            tmp.write_bytes(
                orjson.dumps({"file": cursor.file, "offset": cursor.offset, "skip": cursor.skip})
            )
            os.replace(tmp, self.directory / "cursor.json")
            self._persisted = cursor

    def _cursor_failed(self, exc: BaseException) -> None:
        self.log.warning(
            "buffer.cursor.write_failed",
            path=str(self.directory / "cursor.json"),
            error=str(exc),
            error_type=type(exc).__name__,
        )
        self._on_error(exc)
