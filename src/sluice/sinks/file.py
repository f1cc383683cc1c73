"""The ``file`` sink: JSON Lines appended to a file, with optional rotation and fsync.

Delivery: at-least-once. A batch is one ``write`` of its lines (plus an ``fsync`` when asked), done
in a worker thread so the event loop never waits on the disk. If the write fails (disk full, I/O
error, permission changed, file removed), the file is truncated back to where the batch began, so
no partial line is left, the file is reopened on the next attempt and the runner retries the batch.
An error opening the file that waiting cannot cure (the path is a directory, a parent is a file, no
permission to create it: see :func:`sluice.errors.classify_os_error`) is a
:class:`~sluice.errors.BrokenError`: the runner stops trying this sink and sends its records to the
dead letters (``sluice check`` refuses such a path before a run; this covers what changes after
it). A crash between the write and the acknowledgement can repeat a batch on restart. A crash in
the middle of a write leaves a torn last line: on start the sink cuts it off (it was never
acknowledged, so an at-least-once source sends it again) and logs ``file.torn_line_cut``; a last
line that is whole JSON without its newline is kept and ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field

from sluice.config.models import BatchPolicy, Claim, LocalPath, SinkConfig
from sluice.errors import RetriableError, classify_os_error
from sluice.plugin import ComponentContext, Sink
from sluice.records import Record, join_lines

__all__ = ["FileSink", "FileSinkConfig"]


class FileSinkConfig(SinkConfig):
    """Append records as JSON Lines to a file."""

    type: Literal["file"] = "file"
    path: Path = Field(description="File to append to; parent directories are created.")
    fsync: bool = Field(
        False, description="fsync after every batch: survives a power cut, costs throughput."
    )
    rotate_max_bytes: int | None = Field(
        None,
        gt=0,
        description="Start a new file when the current one would exceed this size. The full "
        "file is renamed to `<stem>.<UTC time to the microsecond><suffix>`, so the names sort in "
        "the order the files were written.",
    )
    rotate_max_age_secs: float | None = Field(
        None, gt=0, description="Start a new file when the current one is older than this."
    )
    batch: BatchPolicy = Field(
        default_factory=lambda: BatchPolicy(
            max_events=2000, max_bytes=2 * 1024 * 1024, max_age_secs=0.2
        )
    )

    def claims(self) -> Iterable[Claim]:
        return [Claim(f"file {self.path.resolve()}", "path", "write")]

    def local_paths(self) -> Iterable[LocalPath]:
        return [LocalPath("path", self.path, "file")]


class FileSink(Sink[FileSinkConfig]):
    """JSON Lines file (at-least-once; rotation by size or age; optional fsync per batch)."""

    config_model = FileSinkConfig
    description = "Append records as JSON Lines to a file (rotation, fsync optional)."

    def __init__(self, component_id: str, config: FileSinkConfig) -> None:
        super().__init__(component_id, config)
        self._fd: int | None = None
        self._size = 0
        self._opened_at = 0.0
        self._log: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        self._log = ctx.log
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        """Create the parents and open the file; an error here is classified (a directory in the
        way cannot heal, a full disk can), unlike one while writing, which is always retried."""
        path = self.config.path
        try:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError as exc:  # the parent is there and is not a directory
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)
                ) from exc
            # read as well: a torn last line left by a crash is found and cut (see _end_last_line)
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise classify_os_error(exc, f"cannot open {path.absolute()}") from exc
        stat = os.fstat(self._fd)
        self._size = _end_last_line(self._fd, stat.st_size, path, self._log)
        self._opened_at = time.time()  # age for rotation counts from when this process opened it

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    async def write_batch(self, records: Sequence[Record]) -> None:
        data = join_lines(records)
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            raise RetriableError(
                f"write to {self.config.path} failed: {exc.strerror or exc}"
            ) from exc

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self._open()
        elif self._should_rotate(len(data)):
            self._rotate()
        fd = self._fd
        assert fd is not None
        start = self._size
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.config.fsync:
                os.fsync(fd)
        except OSError:
            # leave no partial line behind: the retry writes the whole batch again
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            self._close_fd()
            raise
        self._size = start + len(data)

    def _should_rotate(self, incoming: int) -> bool:
        c = self.config
        if (
            c.rotate_max_bytes is not None
            and self._size > 0
            and self._size + incoming > c.rotate_max_bytes
        ):
            return True
        return (
            c.rotate_max_age_secs is not None
            and time.time() - self._opened_at >= c.rotate_max_age_secs
        )

    def _rotate(self) -> None:
        """Rename the current file to ``<stem>.<UTC time>[.n]<suffix>`` and start a new one.

        The time has microseconds: names sort in write order (the ``.n`` of a clash within one
        microsecond would not)."""
        path = self.config.path
        self._close_fd()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
        counter = 1
        while target.exists():
            target = path.with_name(f"{path.stem}.{stamp}.{counter}{path.suffix}")
            counter += 1
        if path.exists():
            os.rename(path, target)
        self._open()

    async def close(self) -> None:
        if self._fd is not None:
            if self.config.fsync:
                await asyncio.to_thread(os.fsync, self._fd)
            self._close_fd()


def _end_last_line(fd: int, size: int, path: Path, log: Any) -> int:
    """Make the file at ``fd`` end with a whole line; its size after that.

    A tail after the last newline that is not JSON is what a crash in the middle of a write
    leaves: it is cut off. A tail that is JSON (a file written by something else without a final
    newline) gets its newline."""
    end = size
    while end > 0:  # the last newline, searched backwards a block at a time
        start = max(0, end - 65536)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            end = start + found + 1
            break
        end = start
    if end == size:
        return size
    tail = os.pread(fd, size - end, end)
    try:
        orjson.loads(tail)
    except orjson.JSONDecodeError:
        os.ftruncate(fd, end)
        if log is not None:
            log.warning("file.torn_line_cut", path=str(path), bytes=size - end)
        return end
    os.write(fd, b"\n")
    return size + 1
