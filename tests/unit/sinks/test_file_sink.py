from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from sluice.errors import RetriableError
from sluice.metrics import Metrics
from sluice.plugin import ComponentContext
from sluice.records import Record
from sluice.sinks.file import FileSink, FileSinkConfig
from tests.volumes import fill, small_tmpfs


def ctx(tmp_path: Path) -> ComponentContext:
    return ComponentContext(
        "out",
        "sink",
        "file",
        tmp_path,
        structlog.get_logger(),
        Metrics().component("out", "sink", "file"),
    )


def records(start: int, count: int) -> list[Record]:
    return [Record(b'{"n":%d}' % i) for i in range(start, start + count)]


async def started(tmp_path: Path, **options: Any) -> FileSink:
    sink = FileSink("out", FileSinkConfig(type="file", inputs=["x"], **options))
    await sink.start(ctx(tmp_path))
    return sink


async def test_appends_json_lines_and_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.jsonl"
    sink = await started(tmp_path, path=path)
    await sink.write_batch(records(0, 2))
    await sink.write_batch(records(2, 1))
    await sink.close()
    assert path.read_bytes() == b'{"n":0}\n{"n":1}\n{"n":2}\n'


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b'{"n":0}\n{"n":1}\n{"n', b'{"n":0}\n{"n":1}\n{"n":2}\n'),  # torn by a crash: cut
        (b'{"n', b'{"n":2}\n'),  # torn first line
        (b'{"n":0}\n{"n":1}', b'{"n":0}\n{"n":1}\n{"n":2}\n'),  # whole, no newline: kept
        (b'{"n":0}\n', b'{"n":0}\n{"n":2}\n'),
        (b"", b'{"n":2}\n'),
    ],
    ids=["torn-tail", "torn-only-line", "whole-tail", "whole", "empty"],
)
async def test_a_torn_last_line_left_by_a_crash_is_cut_off_on_start(
    tmp_path: Path, before: bytes, after: bytes
) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(before)
    sink = await started(tmp_path, path=path)
    await sink.write_batch(records(2, 1))
    await sink.close()
    assert path.read_bytes() == after


async def test_a_torn_line_longer_than_a_read_block_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"n":0}\n{"pad":"' + b"p" * 200_000)
    sink = await started(tmp_path, path=path)
    await sink.write_batch(records(1, 1))
    await sink.close()
    assert path.read_bytes() == b'{"n":0}\n{"n":1}\n'


async def test_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = await started(tmp_path, path=path, rotate_max_bytes=20)
    for i in range(4):
        await sink.write_batch(records(i * 2, 2))  # 16 bytes a batch
    await sink.close()
    # the rotated files' names sort in write order (four rotations within one second too); the
    # file being written keeps the configured name
    rotated = sorted(f.name for f in tmp_path.glob("out.*.jsonl"))
    assert len(rotated) == 3
    in_order = [*rotated, "out.jsonl"]
    assert [(tmp_path / name).read_bytes() for name in in_order] == [
        b'{"n":%d}\n{"n":%d}\n' % (i, i + 1) for i in range(0, 8, 2)
    ]


async def test_rotates_by_age(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = await started(tmp_path, path=path, rotate_max_age_secs=0.05)
    await sink.write_batch(records(0, 1))
    time.sleep(0.06)
    await sink.write_batch(records(1, 1))
    await sink.close()
    assert len(list(tmp_path.glob("out*.jsonl"))) == 2
    assert path.read_bytes() == b'{"n":1}\n'


async def test_fsync_is_called_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    sink = await started(tmp_path, path=tmp_path / "out.jsonl", fsync=True)
    await sink.write_batch(records(0, 3))
    await sink.write_batch(records(3, 3))
    assert len(calls) == 2
    await sink.close()


async def test_disk_full_leaves_no_partial_line_and_is_retriable(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "volume", 64 * 1024) as volume:  # a real full disk
        path = volume / "out.jsonl"
        sink = await started(tmp_path, path=path)
        await sink.write_batch(records(0, 2))
        filler = fill(volume, leave_bytes=0)  # the file's first page still has room: a part of
        big = records(2, 5000)  # this batch reaches the disk, then the disk is full
        with pytest.raises(RetriableError, match="No space left"):
            await sink.write_batch(big)
        assert path.read_bytes() == b'{"n":0}\n{"n":1}\n'  # truncated back
        filler.unlink()
        await sink.write_batch(big)  # the runner's retry
        await sink.close()
        expected = b"".join(b'{"n":%d}\n' % n for n in range(5002))
        assert path.read_bytes() == expected


async def test_permission_error_is_retriable_and_the_file_is_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    sink = await started(tmp_path, path=path)
    await sink.write_batch(records(0, 1))
    real_write = os.write
    opened: list[str] = []
    real_open = os.open

    def denied(fd: int, data: Any) -> int:
        monkeypatch.setattr(os, "write", real_write)
        raise PermissionError(errno.EACCES, "Permission denied")

    def tracking_open(file: Any, flags: int, mode: int = 0o777) -> int:
        opened.append(str(file))
        return real_open(file, flags, mode)

    monkeypatch.setattr(os, "write", denied)
    monkeypatch.setattr(os, "open", tracking_open)
    with pytest.raises(RetriableError, match="Permission denied"):
        await sink.write_batch(records(1, 1))
    await sink.write_batch(records(1, 1))  # the retry reopens the file
    await sink.close()
    assert opened == [str(path)]
    assert path.read_bytes() == b'{"n":0}\n{"n":1}\n'
