"""A sink buffer kept on disk: it survives a crash and a restart.

``buffer: {type: disk}`` puts each segment into an append-only log under
``<data_dir>/sinks/<id>/buffer/`` before the source hears it is done, so a source that cannot be
replayed (a websocket) loses nothing to a crash or a restart of sluice: what was buffered is written
after the restart. A reader cursor (``cursor.json``: file, offset, records already taken from that
frame) advances, in order, once a batch is written by the sink (and its dead letters, if any, by the
dead-letter sink); consumed log files are deleted.

Layout: log files ``<n>.log`` of frames ``[u32 payload length][u32 crc32][payload]``, the payload a
msgpack list of ``[raw, kind, time]``. On start the log is scanned from the cursor; a torn frame at
the end (a crash in mid-write) is cut off. Writes go to the page cache (a process crash loses
nothing); ``fsync_interval_secs`` bounds what a power cut can lose.

On a stop, a disk buffer does not drain: the in-flight batch is finished and the rest stays on disk
for the next start. Delivery stays at-least-once: a crash between a sink write and the cursor update
repeats that batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.records import Record
from sluice.runtime.acks import CommitTracker
from sluice.runtime.buffer import Batch, BatchingQueue, BufferClosed, Segment

__all__ = ["DiskBuffer"]

_HEADER = struct.Struct("<II")
_FILE_BYTES = 64 * 1024 * 1024
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[bytes, str, float | None]]).decode


@dataclass(frozen=True)
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


class DiskBuffer(BatchingQueue):
    """Same interface as :class:`sluice.runtime.buffer.SinkBuffer`, backed by files."""

    def __init__(
        self,
        directory: Path,
        policy: BufferPolicy,
        batch: BatchPolicy,
        on_error: Any = None,
    ) -> None:
        super().__init__(policy, batch)
        self.directory = directory
        self._frames: deque[_Frame] = deque()
        self._skip = 0
        self._write_file = 0
        self._write_fd: int | None = None
        self._write_offset = 0
        self._drain = True
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._on_error = on_error or (lambda exc: None)
        self._tracker = CommitTracker(self._persist_cursor, self._on_error)
        self._end = _Cursor(1, 0, 0)
        self.abandoned = asyncio.Event()
        """Set by ``close(drain=False)``: the sink may give up its in-flight batch (it is on disk)."""
        self._tracker_task: asyncio.Task[None] | None = None
        self._synced_at = time.monotonic()
        self._append_lock = asyncio.Lock()

    # -- opening and recovery ----------------------------------------------------------------------

    async def _ensure_open(self) -> None:
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                await asyncio.to_thread(self._recover)
                self._opened = True
                self._tracker_task = asyncio.get_running_loop().create_task(
                    self._tracker.run(), name=f"disk-buffer:{self.directory}"
                )

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cursor = self._read_cursor()
        files = sorted(int(p.stem) for p in self.directory.glob("*.log") if p.stem.isdigit())
        now = time.monotonic()
        for number in files:
            if number < cursor.file:
                (self.directory / f"{number}.log").unlink(missing_ok=True)
                continue
            path = self.directory / f"{number}.log"
            data = path.read_bytes()
            offset = cursor.offset if number == cursor.file else 0
            while offset + _HEADER.size <= len(data):
                length, crc = _HEADER.unpack_from(data, offset)
                start, end = offset + _HEADER.size, offset + _HEADER.size + length
                payload = data[start:end]
                if end > len(data) or zlib.crc32(payload) != crc:
                    break
                rows = _decode(payload)
                self._frames.append(
                    _Frame(
                        number, offset, end - offset, len(rows), sum(len(r[0]) for r in rows), now
                    )
                )
                offset = end
            if offset < len(data):  # a torn frame from a crash in mid-write: cut it off
                with path.open("r+b") as file:
                    file.truncate(offset)
        if (
            self._frames
            and self._frames[0].file == cursor.file
            and self._frames[0].offset == cursor.offset
        ):
            self._skip = cursor.skip
            first = self._frames[0]
            rows = self._read_rows(first)[: self._skip]
            first_bytes = sum(len(r[0]) for r in rows)
            first.events -= self._skip
            first.nbytes -= first_bytes
        self.events = sum(f.events for f in self._frames)
        self.nbytes = sum(f.nbytes for f in self._frames)
        self._write_file = max([*files, cursor.file, 1])
        path = self.directory / f"{self._write_file}.log"
        self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._write_offset = os.fstat(self._write_fd).st_size
        self._end = _Cursor(self._write_file, self._write_offset, 0)

    def _read_cursor(self) -> _Cursor:
        try:
            data = orjson.loads((self.directory / "cursor.json").read_bytes())
            return _Cursor(int(data["file"]), int(data["offset"]), int(data["skip"]))
        except FileNotFoundError:
            return _Cursor(1, 0, 0)

    # -- the SinkBuffer interface ------------------------------------------------------------------

    def volatile_events(self) -> int:
        """Records that would be lost if the process stopped now: none, they are on disk."""
        return 0

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
        payload = _encode([(r.raw, r.kind, r.time) for r in records])
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        async with self._append_lock:  # one writer at a time keeps offsets exact
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
        segment.group.release()  # durable now: the source may move on
        return True

    async def _append_retrying(self, frame: bytes) -> None:
        """Append, waiting out a full or failing disk (the source waits meanwhile, as when the
        buffer is full); raises BufferClosed if the pipeline stops without it."""
        delay = 0.1
        while True:
            try:
                await asyncio.to_thread(self._append, frame)
                return
            except OSError as exc:
                if self._closed:
                    raise BufferClosed(f"buffer closed while its disk failed: {exc}") from exc
                self._on_error(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _append(self, frame: bytes) -> None:
        if self._write_offset >= _FILE_BYTES:
            assert self._write_fd is not None
            os.close(self._write_fd)
            self._write_file += 1
            path = self.directory / f"{self._write_file}.log"
            self._write_fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            self._write_offset = 0
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
        self._write_offset += len(frame)
        interval = self.policy.fsync_interval_secs
        if interval is not None and time.monotonic() - self._synced_at >= interval:
            os.fsync(self._write_fd)
            self._synced_at = time.monotonic()

    def close(self, drain: bool = True) -> None:
        """No more puts. With ``drain``, ``next_batch`` returns what is held, then None; without,
        it returns None at once and what is held stays on disk for the next start."""
        self._drain = drain
        if not drain:
            self.abandoned.set()
        super().close(drain)

    async def next_batch(self) -> Batch | None:
        await self._ensure_open()
        if (self._closed and not self._drain) or not await self._wait_for_batch():
            await self._finish()
            return None
        if self._closed and not self._drain:
            await self._finish()
            return None
        return await self._take()

    async def _finish(self) -> None:
        await self._tracker.flush()
        if self._tracker_task is not None:
            self._tracker_task.cancel()
        if self._write_fd is not None:
            os.fsync(self._write_fd)
            os.close(self._write_fd)
            self._write_fd = None
        return None

    async def _take(self) -> Batch:
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
        group = self._tracker.open(cursor)
        parts = await asyncio.to_thread(self._read_plan, plan)
        records = [Record(raw, kind, t) for part in parts for raw, kind, t in part]
        nbytes = sum([len(r.raw) for r in records])
        last_frame = plan[-1][0]
        if self._frames and self._frames[0] is last_frame:  # partly taken: it keeps the rest
            last_frame.nbytes -= sum(len(row[0]) for row in parts[-1])
        self._removed(len(records), nbytes)
        return Batch([Segment(records, nbytes, group)], records, nbytes)

    def _read_plan(
        self, plan: list[tuple[_Frame, int, int]]
    ) -> list[list[tuple[bytes, str, float | None]]]:
        return [self._read_rows(frame)[skip : skip + count] for frame, skip, count in plan]

    def _read_rows(self, frame: _Frame) -> list[tuple[bytes, str, float | None]]:
        fd = os.open(self.directory / f"{frame.file}.log", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, frame.size, frame.offset)
        finally:
            os.close(fd)
        return _decode(data[_HEADER.size :])

    async def _persist_cursor(self, cursor: _Cursor) -> None:
        await asyncio.to_thread(self._write_cursor, cursor)

    def _write_cursor(self, cursor: _Cursor) -> None:
        tmp = self.directory / "cursor.tmp"
        tmp.write_bytes(
            orjson.dumps({"file": cursor.file, "offset": cursor.offset, "skip": cursor.skip})
        )
        os.replace(tmp, self.directory / "cursor.json")
        for path in self.directory.glob("*.log"):
            if path.stem.isdigit() and int(path.stem) < cursor.file:
                path.unlink(missing_ok=True)
