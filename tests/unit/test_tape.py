"""The tape format (sluice.tape): what is written is read back exactly, segments rotate, a newer
version and damaged bytes are refused with the file and offset, a cut-short segment ends at its
last whole entry."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from sluice.simulator.tape import load_tape
from sluice.tape import (
    KIND_CONNECTION,
    KIND_FRAME,
    MAGIC,
    RecordConfig,
    TapeError,
    TapeWriter,
    read_tape,
    tape_segments,
)

LOG = structlog.get_logger("test")
MATCH = (
    b'{"type":"match","trade_id":%d,"maker_order_id":"a","taker_order_id":"b","side":"buy",'
    b'"size":"0.1","price":"100.5","product_id":"BTC-USD","sequence":%d,'
    b'"time":"2024-01-01T00:00:%02d.000000Z"}'
)


def write(tmp_path: Path, frames: list[bytes], **options: Any) -> Path:
    directory = tmp_path / "tape"
    writer = TapeWriter(RecordConfig(path=directory, **options), {"source": "coinbase"}, LOG)
    writer.connection("ws://127.0.0.1:1")
    for frame in frames:
        writer.frames_received([frame])
    writer.close()
    return directory


def test_frames_are_read_back_byte_for_byte_in_order_with_the_header(tmp_path: Path) -> None:
    frames = [MATCH % (n, n, n) for n in range(1, 6)] + [b"\xff not json \n", b""]
    directory = write(tmp_path, frames)
    entries = list(read_tape(directory))
    assert [e.kind for _, e in entries] == [KIND_CONNECTION] + [KIND_FRAME] * len(frames)
    assert [e.payload for _, e in entries[1:]] == frames
    header = entries[0][0]
    assert header["format"] == "sluice-tape" and header["version"] == 1
    assert header["source"] == "coinbase" and header["segment"] == 1
    times = [e.time for _, e in entries]
    assert times == sorted(times)


def test_segments_rotate_at_segment_bytes_and_old_ones_are_deleted(tmp_path: Path) -> None:
    frames = [MATCH % (n, n, n % 60) for n in range(1, 201)]  # ~40 KB of frames
    directory = write(tmp_path, frames, segment_bytes=4096, keep_segments=3)
    segments = tape_segments(directory)
    assert len(segments) == 3
    assert [p.name for p in segments] == sorted(p.name for p in segments)
    payloads = [e.payload for _, e in read_tape(directory) if e.kind == KIND_FRAME]
    assert payloads == frames[-len(payloads) :]  # the newest frames, in order


def test_a_tape_of_a_newer_version_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "new.tape.gz"
    with gzip.open(path, "wb") as out:
        out.write(MAGIC + struct.pack("<HI", 2, 2) + b"{}")
    with pytest.raises(TapeError, match=r"new\.tape\.gz: tape format version 2 is newer"):
        list(read_tape(path))


def test_a_file_that_is_not_a_tape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.tape.gz"
    path.write_bytes(b"plain text, not gzip")
    with pytest.raises(TapeError, match=r"x\.tape\.gz: damaged compressed data"):
        list(read_tape(path))


def test_a_damaged_entry_is_an_error_naming_the_file_and_offset(tmp_path: Path) -> None:
    directory = write(tmp_path, [MATCH % (1, 1, 1), MATCH % (2, 2, 2)])
    [segment] = tape_segments(directory)
    data = bytearray(gzip.decompress(segment.read_bytes()))
    second = data.rindex(MATCH % (2, 2, 2))
    data[second + 20] ^= 0x01  # one bit of the second frame
    damaged = tmp_path / "damaged.tape.gz"
    damaged.write_bytes(gzip.compress(bytes(data)))
    entry_at = second - 18  # the entry's fixed part precedes its payload
    with pytest.raises(TapeError, match=rf"damaged\.tape\.gz: entry at offset {entry_at} fails"):
        list(read_tape(damaged))
    data[entry_at] = 0x00  # the marker
    damaged.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(TapeError, match=rf"damaged entry at offset {entry_at}"):
        list(read_tape(damaged))


def test_a_segment_cut_short_ends_at_its_last_whole_entry(tmp_path: Path) -> None:
    frames = [MATCH % (n, n, n) for n in range(1, 4)]
    directory = write(tmp_path, frames)
    [segment] = tape_segments(directory)
    whole = segment.read_bytes()
    cut = tmp_path / "cut.tape.gz"
    data = gzip.decompress(whole)
    cut.write_bytes(gzip.compress(data[:-10])[:-8])  # the last entry torn, no gzip trailer
    payloads = [e.payload for _, e in read_tape(cut) if e.kind == KIND_FRAME]
    assert payloads == frames[:2]


def test_a_tape_replays_as_a_recording_of_its_trades(tmp_path: Path) -> None:
    last = MATCH.replace(b'"match"', b'"last_match"') % (1, 1, 1)
    frames = [b'{"type":"subscriptions","channels":[]}', last] + [
        MATCH % (n, n, n) for n in range(2, 5)
    ]
    recording = load_tape(write(tmp_path, frames))
    assert recording.products == ("BTC-USD",)
    assert recording.initial_matches["BTC-USD"] == MATCH % (1, 1, 1)
    assert [e.frame for e in recording.events] == frames[2:]
    assert [orjson.loads(e.frame)["trade_id"] for e in recording.events] == [2, 3, 4]


def test_a_tape_without_trades_cannot_be_replayed(tmp_path: Path) -> None:
    directory = write(tmp_path, [b'{"type":"heartbeat"}'])
    with pytest.raises(TapeError, match="no ticker or match frame"):
        load_tape(directory)
    with pytest.raises(TapeError, match="no such tape"):
        load_tape(tmp_path / "missing")


def test_a_tape_that_cannot_be_written_loses_its_frames_counted_never_raising(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the tape directory should be")
    writer = TapeWriter(RecordConfig(path=blocked), {"source": "coinbase"}, LOG)
    writer.frames_received([MATCH % (1, 1, 1), MATCH % (2, 2, 2)])
    writer.frames_received([MATCH % (3, 3, 3)])
    writer.close()
    writer.frames_received([MATCH % (4, 4, 4)])  # after close: counted, not written
    assert (writer.frames, writer.lost) == (4, 4)
    assert blocked.read_text().startswith("a file")
