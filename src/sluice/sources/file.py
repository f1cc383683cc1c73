"""The ``file`` source: JSON Lines from a file, optionally following it as it grows.

Delivery: at-least-once with resume. The source keeps a checkpoint (the byte offset of the first
line not yet written by every sink) in ``<data_dir>/sources/<id>/checkpoint.json`` and starts from
there, so a stop and a start neither skip nor repeat lines; after a crash, lines written since the
last checkpoint (at most ``checkpoint_interval_secs`` old) are read again. A checkpoint belongs to one
file, identified by its inode and a hash of its first bytes (inode numbers are reused): a replaced
file is read from its start. A line that is not a JSON object goes to
the dead letters with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field

from sluice.config.models import Claim, SourceConfig
from sluice.plugin import ComponentContext, Source
from sluice.records import Record, Rejected, SourceBatch

__all__ = ["FileSource", "FileSourceConfig"]


class FileSourceConfig(SourceConfig):
    """Read JSON Lines from a file."""

    type: Literal["file"] = "file"
    path: Path = Field(description="The JSON Lines file to read.")
    follow: bool = Field(False, description="Keep reading as the file grows (like `tail -F`).")
    start_at: Literal["beginning", "end"] = Field(
        "beginning", description="Where to start when there is no checkpoint."
    )
    kind: str = Field("line", description="The records' kind, for routing.")
    poll_interval_secs: float = Field(
        0.25, gt=0, description="With `follow`, how often to look for new data."
    )
    checkpoint_interval_secs: float = Field(
        1.0, ge=0, description="Least time between checkpoint writes (the last is always written)."
    )
    read_bytes: int = Field(1024 * 1024, ge=4096, description="Bytes read at a time.")

    def claims(self) -> Iterable[Claim]:
        return [Claim(f"file {self.path.resolve()}", "path", "read")]


@dataclass(frozen=True)
class _Position:
    """A place in one file: its identity (inode + hash of the head) and a byte offset."""

    inode: int
    head: str
    """Hex digest of the file's first ``min(offset, HEAD_BYTES)`` bytes."""
    offset: int


class FileSource(Source[FileSourceConfig]):
    """JSON Lines file with a checkpoint (at-least-once; exact resume after a clean stop)."""

    config_model = FileSourceConfig
    delivery_note = "Resumes from the first line not yet written by every sink."
    description = "Read JSON Lines from a file, optionally following it; resumes from a checkpoint."

    def __init__(self, component_id: str, config: FileSourceConfig) -> None:
        super().__init__(component_id, config)
        self._checkpoint_path: Path | None = None
        self._resume: _Position | None = None
        """Where reading continues: the checkpoint at start, then the last position read."""
        self._rotated = False
        self._pending: _Position | None = None
        self._written_at = 0.0
        self._log: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        self._log = ctx.log
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        self._checkpoint_path = ctx.data_dir / "checkpoint.json"
        if not self.config.follow and not self.config.path.exists():
            raise FileNotFoundError(f"{self.config.path}: no such file")
        self._resume = await asyncio.to_thread(self._read_checkpoint)

    def _read_checkpoint(self) -> _Position | None:
        assert self._checkpoint_path is not None
        try:
            data = orjson.loads(self._checkpoint_path.read_bytes())
            return _Position(int(data["inode"]), str(data["head"]), int(data["offset"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._log.warning(
                "checkpoint.unreadable", path=str(self._checkpoint_path), error=str(exc)
            )
            return None

    async def batches(self) -> AsyncIterator[SourceBatch]:
        c = self.config
        while True:
            try:
                fd = os.open(c.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not c.follow:
                    raise
                await asyncio.sleep(c.poll_interval_secs)
                continue
            try:
                async for batch in self._read_file(fd):
                    yield batch
            finally:
                os.close(fd)
            if not c.follow:
                return

    async def _read_file(self, fd: int) -> AsyncIterator[SourceBatch]:
        """Batches from one open file; returns at EOF (or, following, when it is replaced)."""
        c = self.config
        stat = os.fstat(fd)
        inode = stat.st_ino
        offset = self._resume_offset(fd, inode, stat.st_size)
        head = _head_digest(fd, offset) if offset else ""
        kind = c.kind
        carry = b""
        replaced = False  # following: a new file is at the path; finish this one first
        while True:
            chunk = await asyncio.to_thread(os.pread, fd, c.read_bytes, offset + len(carry))
            if chunk:
                data = carry + chunk
                end = data.rfind(b"\n")
                if end < 0:
                    carry = data
                    continue
                complete, carry = data[: end + 1], data[end + 1 :]
                if len(head) == 0 or offset < HEAD_BYTES:
                    head = await asyncio.to_thread(_head_digest, fd, offset + len(complete))
                offset += len(complete)
                self._resume = _Position(inode, head, offset)
                yield _parse(complete, kind, self._resume)
                continue
            # end of the file for now
            if not c.follow or replaced:
                if carry:  # a last line without a newline
                    if len(head) == 0 or offset < HEAD_BYTES:
                        head = await asyncio.to_thread(_head_digest, fd, offset + len(carry))
                    offset += len(carry)
                    self._resume = _Position(inode, head, offset)
                    yield _parse(carry, kind, self._resume)
                if replaced:
                    self._resume, self._rotated = None, True
                return
            await asyncio.sleep(c.poll_interval_secs)
            try:
                current = os.stat(c.path)
            except FileNotFoundError:
                continue  # being rotated: keep the old file until a new one appears
            if current.st_ino != inode:
                # rotated: read what was appended to the old file since the last look (the loop
                # comes back here at its end), then the new one from its start
                self._log.info("file.rotated", path=str(c.path))
                replaced = True
                continue
            if current.st_size < offset + len(carry):
                self._log.warning("file.truncated", path=str(c.path), offset=offset)
                offset, carry = 0, b""

    def _resume_offset(self, fd: int, inode: int, size: int) -> int:
        saved = self._resume
        if (
            saved is not None
            and saved.inode == inode
            and saved.offset <= size
            and _head_digest(fd, saved.offset) == saved.head
        ):
            if saved.offset:
                self._log.info("file.resuming", path=str(self.config.path), offset=saved.offset)
            return saved.offset
        if saved is not None:
            self._log.warning(
                "file.checkpoint_mismatch",
                path=str(self.config.path),
                detail="the file was replaced or truncated; reading it from its start",
            )
            return 0
        if self._rotated:
            return 0
        return size if self.config.start_at == "end" else 0

    async def commit(self, token: Any) -> None:
        assert isinstance(token, _Position)
        self._pending = token
        if time.monotonic() - self._written_at >= self.config.checkpoint_interval_secs:
            await self._write_checkpoint()

    async def _write_checkpoint(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None or self._checkpoint_path is None:
            return
        self._written_at = time.monotonic()
        await asyncio.to_thread(_write_atomic, self._checkpoint_path, pending, self.config.path)

    async def close(self) -> None:
        await self._write_checkpoint()


HEAD_BYTES = 1024


def _head_digest(fd: int, upto: int) -> str:
    """Identity of a file's content: a hash of its first ``min(upto, HEAD_BYTES)`` bytes."""
    return hashlib.blake2b(os.pread(fd, min(upto, HEAD_BYTES), 0), digest_size=16).hexdigest()


def _parse(block: bytes, kind: str, position: _Position) -> SourceBatch:
    records: list[Record] = []
    rejected: list[Rejected] = []
    loads = orjson.loads
    for line in block.split(b"\n"):
        if not line.strip():
            continue
        line = line.rstrip(b"\r")
        try:
            value = loads(line)
        except orjson.JSONDecodeError as exc:
            rejected.append(Rejected(line, f"invalid JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            rejected.append(Rejected(line, f"not a JSON object (a {type(value).__name__})"))
            continue
        records.append(Record(line, kind))
    return SourceBatch(records, rejected, position)


def _write_atomic(path: Path, position: _Position, source: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(
        orjson.dumps(
            {
                "path": str(source),
                "inode": position.inode,
                "head": position.head,
                "offset": position.offset,
            }
        )
    )
    os.replace(tmp, path)
