"""Tapes: every frame a Coinbase source received, exact bytes and arrival time, on disk.

``record:`` on the ``coinbase`` source writes a tape: a directory of segment files
``<prefix>-<n>.tape.gz`` (gzip), a new one once a segment holds ``segment_bytes`` of frames
(rotation; ``keep_segments`` deletes the oldest). ``sluice simulate coinbase --replay TAPE`` serves
a tape (a segment file or a directory of them, in order) the way the built-in replay serves the
shipped recording.

A segment's uncompressed bytes:

- the header: ``SLUICETAPE`` (10 bytes), the format version (u16, little-endian; this is 1), the
  length of the header's JSON (u32) and that JSON (``format``, ``version``, ``source``,
  ``url``, ``subscribe`` (the request sent), ``segment``, ``created_at``, ``sluice``);
- entries: a marker byte ``0xF5``, the kind (u8: 1 a frame, 2 a new connection whose URL is the
  payload, 3 the first bytes of a frame over ``max_frame_bytes``), the arrival time (f64, unix
  seconds: when the source took the frame from the connection; the frames read in one go share
  it), the payload's length (u32), its CRC-32 (u32) and the payload.

A reader of version N reads every version up to N (the header says which); a tape of a newer
version is refused with a clear message. Reading is strict: a wrong marker, kind, length or CRC,
or a gzip stream that is damaged, raises :class:`TapeError` naming the file and the offset (in the
uncompressed stream). A segment cut short (the recorder was killed before it closed the file) ends
at its last whole entry; that is logged, not an error. Frames are compressed and written on a
thread of the writer's own and flushed to the file about once a second, so a crash loses at most
that much of the tape; a failed write never stops the source (logged and counted).
"""

from __future__ import annotations

import gzip
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import Field

from sluice.config.models import MiB, StrictModel

__all__ = [
    "FORMAT_VERSION",
    "KIND_CONNECTION",
    "KIND_FRAME",
    "KIND_OVERSIZE",
    "RecordConfig",
    "TapeEntry",
    "TapeError",
    "TapeWriter",
    "read_tape",
    "tape_segments",
]

MAGIC = b"SLUICETAPE"
FORMAT_VERSION = 1
ENTRY_MARK = 0xF5
KIND_FRAME = 1
KIND_CONNECTION = 2
KIND_OVERSIZE = 3
_KINDS = frozenset({KIND_FRAME, KIND_CONNECTION, KIND_OVERSIZE})
_HEAD = struct.Struct("<HI")
_ENTRY = struct.Struct("<BBdII")
MAX_ENTRY_BYTES = 1 << 30
"""An entry longer than this is a damaged length, not a frame."""
_FLUSH_SECS = 1.0
MAX_PENDING_BYTES = 64 * 1024 * 1024
"""Frames waiting for the writer thread at most; beyond, they are left out of the tape, counted."""
SUFFIX = ".tape.gz"


class RecordConfig(StrictModel):
    """Where and how a source records its frames."""

    path: Path = Field(description="Directory of the tape's segment files (created if missing).")
    prefix: str = Field(
        "coinbase",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Segment file names: `<prefix>-<n>.tape.gz`.",
    )
    segment_bytes: int = Field(
        64 * MiB, ge=4096, description="Start a new segment once one holds this many frame bytes."
    )
    keep_segments: int | None = Field(
        None, gt=0, description="Delete the oldest segments beyond this many; unset keeps all."
    )
    compress_level: int = Field(
        6, ge=1, le=9, description="gzip level (1 fastest, 9 smallest; ~10x smaller at 6)."
    )


class TapeError(Exception):
    """A tape cannot be read: the message names the file and the offset."""


@dataclass(frozen=True, slots=True)
class TapeEntry:
    kind: int
    time: float
    payload: bytes


class TapeWriter:
    """Appends the frames a source receives to a tape.

    The caller (the source, on its loop) only frames the entries (about 2.5 us a frame); compressing
    and writing happen on one thread of their own, in order. A failed write (a full disk) never
    reaches the source: it is logged (``tape.write_failed``, then at most every 30 s) and the
    frames it held are counted in :attr:`lost`; so are frames beyond ``MAX_PENDING_BYTES``
    waiting for a slow disk."""

    def __init__(self, config: RecordConfig, header: dict[str, Any], log: Any) -> None:
        self.config = config
        self.header = header
        self.log = log
        self._file: gzip.GzipFile | None = None
        self._raw: BinaryIO | None = None
        self._written = 0
        self._flushed_at = 0.0
        self.segment = 0
        self.frames = 0
        """Entries handed to the writer."""
        self.lost = 0
        """Entries that did not reach the tape (write failures, a backlog past the bound)."""
        self._pending = 0
        self._lock = threading.Lock()
        self._failed_logged_at: float | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sluice-tape")
        self._closed = False

    def _open(self) -> gzip.GzipFile:
        directory = self.config.path
        directory.mkdir(parents=True, exist_ok=True)
        existing = tape_segments(directory, self.config.prefix, missing_ok=True)
        numbers = [_segment_number(p) for p in existing]
        self.segment = max([n for n in numbers if n is not None] or [0]) + 1
        path = directory / f"{self.config.prefix}-{self.segment:06d}{SUFFIX}"
        self._raw = open(path, "xb")  # noqa: SIM115 - closed in _close_segment
        out = self._file = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._raw, compresslevel=self.config.compress_level
        )
        header = orjson.dumps(
            {
                **self.header,
                "format": "sluice-tape",
                "version": FORMAT_VERSION,
                "segment": self.segment,
                "created_at": time.time(),
            }
        )
        out.write(MAGIC + _HEAD.pack(FORMAT_VERSION, len(header)) + header)
        self._written = 0
        self.log.info("tape.segment_opened", path=str(path))
        self._prune()
        return out

    def _prune(self) -> None:
        keep = self.config.keep_segments
        if keep is None:
            return
        segments = tape_segments(self.config.path, self.config.prefix, missing_ok=True)
        for old in segments[: max(0, len(segments) - keep)]:
            old.unlink(missing_ok=True)
            self.log.info("tape.segment_deleted", path=str(old))

    def connection(self, url: str) -> None:
        self._write([(KIND_CONNECTION, url.encode())], time.time())

    def frames_received(self, frames: list[bytes]) -> None:
        entries: list[tuple[int, bytes]] = []
        for frame in frames:
            head = getattr(frame, "head", None)  # an Oversize stand-in: its first bytes
            entries.append((KIND_OVERSIZE, head) if head is not None else (KIND_FRAME, frame))
        self._write(entries, time.time())

    def _write(self, entries: list[tuple[int, bytes]], when: float) -> None:
        pack, crc = _ENTRY.pack, zlib.crc32
        parts: list[bytes] = []
        size = 0
        for kind, payload in entries:
            parts.append(pack(ENTRY_MARK, kind, when, len(payload), crc(payload)))
            parts.append(payload)
            size += len(payload)
        self.frames += len(entries)
        with self._lock:
            if self._closed:
                self.lost += len(entries)
                return
            if self._pending + size > MAX_PENDING_BYTES:
                self.lost += len(entries)
                self._failed(OSError("the disk is slower than the feed"), len(entries))
                return
            self._pending += size
        self._executor.submit(self._append, b"".join(parts), size, len(entries))

    def _append(self, blob: bytes, size: int, count: int) -> None:
        """On the writer thread: one batch of entries into the current segment."""
        try:
            out = self._file or self._open()
            out.write(blob)
            self._written += size
            now = time.monotonic()
            if self._written >= self.config.segment_bytes:
                self._close_segment()
            elif now - self._flushed_at >= _FLUSH_SECS:
                out.flush()
                self._flushed_at = now
        except OSError as exc:
            with self._lock:
                self.lost += count
            self._failed(exc, count)
            self._close_segment(quiet=True)  # the next batch starts a new segment
        finally:
            with self._lock:
                self._pending -= size

    def _failed(self, exc: BaseException, count: int) -> None:
        now = time.monotonic()
        if self._failed_logged_at is None or now - self._failed_logged_at >= 30:
            self._failed_logged_at = now
            self.log.warning(
                "tape.write_failed", error=str(exc), frames_lost=count, lost_so_far=self.lost
            )

    def _close_segment(self, quiet: bool = False) -> None:
        try:
            if self._file is not None:
                self._file.close()
            if self._raw is not None:
                self._raw.close()
        except OSError:
            if not quiet:
                raise
        finally:
            self._file = self._raw = None

    def close(self) -> None:
        """Write what is pending and close the segment (waits for the writer thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._executor.submit(self._close_segment, True)
        self._executor.shutdown(wait=True)


def _segment_number(path: Path) -> int | None:
    stem = path.name[: -len(SUFFIX)]
    number = stem.rsplit("-", 1)[-1]
    return int(number) if number.isdigit() else None


def tape_segments(path: Path, prefix: str | None = None, *, missing_ok: bool = False) -> list[Path]:
    """A tape's segment files in order: ``path`` itself when it is a file, else the
    ``*.tape.gz`` files in it (``<prefix>-*`` only when given), by segment number."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        if missing_ok:
            return []
        raise TapeError(f"{path}: no such tape file or directory")
    pattern = f"{prefix}-*{SUFFIX}" if prefix else f"*{SUFFIX}"
    found = [p for p in path.glob(pattern) if p.is_file()]
    return sorted(found, key=lambda p: (_segment_number(p) or 0, p.name))


def read_tape(path: Path, log: Any = None) -> Iterator[tuple[dict[str, Any], TapeEntry]]:
    """Every entry of the tape at ``path`` (a segment or a directory), with its segment's
    header. Raises :class:`TapeError` for a tape that cannot be read."""
    segments = tape_segments(path)
    if not segments:
        raise TapeError(f"{path}: no tape segments (*{SUFFIX}) in it")
    for segment in segments:
        yield from _read_segment(segment, log)


class _Reader:
    """Exact reads from a gzip stream, with the offset and the file's name for errors."""

    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self.stream = stream
        self.path = path
        self.offset = 0
        self.torn = False

    def read(self, size: int, what: str, *, at_start: bool = False) -> bytes | None:
        """``size`` bytes, or None at a clean end (only ``at_start`` of an entry) or a torn
        end (the stream stops early: :attr:`torn`)."""
        try:
            data = self.stream.read(size)
        except EOFError:  # gzip's "ended before the end-of-stream marker": a cut-short file
            self.torn = True
            return None
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise TapeError(
                f"{self.path}: damaged compressed data near uncompressed offset {self.offset} "
                f"({what}): {exc}"
            ) from None
        if len(data) < size:
            if at_start and not data:
                return None
            self.torn = True
            return None
        self.offset += size
        return data


def _read_segment(path: Path, log: Any) -> Iterator[tuple[dict[str, Any], TapeEntry]]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise TapeError(f"{path}: cannot open the tape: {exc}") from None
    with raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
        reader = _Reader(stream, path)  # type: ignore[arg-type]
        head = reader.read(len(MAGIC) + _HEAD.size, "header")
        if head is None or not head.startswith(MAGIC):
            raise TapeError(f"{path}: not a sluice tape (no SLUICETAPE header at offset 0)")
        version, length = _HEAD.unpack_from(head, len(MAGIC))
        if version > FORMAT_VERSION:
            raise TapeError(
                f"{path}: tape format version {version} is newer than this sluice reads "
                f"(up to {FORMAT_VERSION}); upgrade sluice"
            )
        if length > MAX_ENTRY_BYTES:
            raise TapeError(f"{path}: header length {length} at offset {len(head) - 4} is damaged")
        body = reader.read(length, "header")
        if body is None:
            raise TapeError(f"{path}: the header is cut short at offset {reader.offset}")
        try:
            header = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise TapeError(
                f"{path}: the header at offset {len(head)} is not JSON: {exc}"
            ) from None
        if not isinstance(header, dict):
            raise TapeError(f"{path}: the header at offset {len(head)} is not a JSON object")
        while True:
            at = reader.offset
            fixed = reader.read(_ENTRY.size, "entry", at_start=True)
            if fixed is None:
                break
            mark, kind, when, size, crc = _ENTRY.unpack(fixed)
            if mark != ENTRY_MARK or kind not in _KINDS:
                raise TapeError(
                    f"{path}: damaged entry at offset {at} (marker {mark:#04x}, kind {kind})"
                )
            if size > MAX_ENTRY_BYTES or when != when:  # NaN time
                raise TapeError(f"{path}: damaged entry at offset {at} (length {size})")
            payload = reader.read(size, "entry")
            if payload is None:
                break
            if zlib.crc32(payload) != crc:
                raise TapeError(f"{path}: entry at offset {at} fails its CRC-32 check")
            yield header, TapeEntry(kind, when, payload)
        if reader.torn and log is not None:
            log.warning(
                "tape.cut_short",
                path=str(path),
                offset=reader.offset,
                detail="the segment ends inside an entry (the recorder stopped before closing "
                "it); read up to its last whole entry",
            )
