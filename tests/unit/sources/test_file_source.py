from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from sluice.metrics import Metrics
from sluice.plugin import ComponentContext
from sluice.records import SourceBatch
from sluice.sources.file import FileSource, FileSourceConfig


def ctx(tmp_path: Path) -> ComponentContext:
    return ComponentContext(
        "f",
        "source",
        "file",
        tmp_path / "state",
        structlog.get_logger(),
        Metrics().component("f", "source", "file"),
    )


async def source(tmp_path: Path, **options: Any) -> FileSource:
    src = FileSource("f", FileSourceConfig(type="file", **options))
    await src.start(ctx(tmp_path))
    return src


async def collect(src: FileSource, limit: int | None = None) -> list[SourceBatch]:
    batches = []
    async for batch in src.batches():
        batches.append(batch)
        if limit is not None and len(batches) >= limit:
            break
    return batches


async def test_reads_lines_and_rejects_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a":1}\n\n{oops\n"str"\n{"a":2}\r\n{"a":3}')  # last line: no newline
    src = await source(tmp_path, path=path)
    batches = await collect(src)
    raws = [r.raw for b in batches for r in b.records]
    assert raws == [b'{"a":1}', b'{"a":2}', b'{"a":3}']
    reasons = [r.reason for b in batches for r in b.rejected]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "not a JSON object (a str)"


async def test_resumes_from_the_committed_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(100)))
    src = await source(tmp_path, path=path, read_bytes=4096, checkpoint_interval_secs=0)
    first = (await collect(src, limit=1))[0]
    await src.commit(first.token)
    await src.close()
    read_first = len(first.records)
    again = await source(tmp_path, path=path)
    rest = [r.raw for b in await collect(again) for r in b.records]
    assert [r.raw for r in first.records] + rest == [b'{"n":%d}' % i for i in range(100)]
    assert len(rest) == 100 - read_first


async def test_a_replaced_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"n":1}\n{"n":2}\n')
    src = await source(tmp_path, path=path, checkpoint_interval_secs=0)
    batch = (await collect(src))[0]
    await src.commit(batch.token)
    await src.close()
    path.unlink()
    path.write_bytes(b'{"n":3}\n{"n":4}\n{"n":5}\n')  # new inode, bigger than the old offset
    again = await source(tmp_path, path=path)
    assert [r.raw for b in await collect(again) for r in b.records] == [
        b'{"n":3}',
        b'{"n":4}',
        b'{"n":5}',
    ]


def follow(src: FileSource, want: int) -> tuple[list[bytes], asyncio.Task[None]]:
    """Read ``src`` in the background until ``want`` records arrived; the list fills as it reads."""
    seen: list[bytes] = []

    async def read() -> None:
        async for batch in src.batches():
            seen.extend(r.raw for r in batch.records)
            if len(seen) >= want:
                return

    return seen, asyncio.create_task(read())


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_follow_picks_up_appended_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"n":1}\n')
    src = await source(tmp_path, path=path, follow=True, poll_interval_secs=0.01)
    seen, reader = follow(src, 3)
    await until(lambda: len(seen) == 1)
    with path.open("ab") as f:
        f.write(b'{"n":2}\n{"n":')  # a half-written line waits for its end
    await until(lambda: len(seen) == 2)
    with path.open("ab") as f:
        f.write(b"3}\n")
    await asyncio.wait_for(reader, 2)
    assert seen == [b'{"n":1}', b'{"n":2}', b'{"n":3}']


async def test_follow_reads_the_end_of_a_rotated_file_before_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"n":1}\n')
    src = await source(tmp_path, path=path, follow=True, poll_interval_secs=0.05)
    seen, reader = follow(src, 5)
    await until(lambda: len(seen) == 1)
    # within one poll: lines appended to the old file, which is then renamed (logrotate's
    # "create"), and a new file at the path; the last old line has no newline yet
    with path.open("ab") as f:
        f.write(b'{"n":2}\n{"n":3}')
    path.rename(tmp_path / "in.jsonl.1")
    path.write_bytes(b'{"n":4}\n{"n":5}\n')
    await asyncio.wait_for(reader, 5)
    assert seen == [b'{"n":%d}' % i for i in range(1, 6)]


async def test_hostile_lines_are_dead_letters_and_the_source_reads_on(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    hostile = [
        b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}",  # deeper than any JSON reader here allows
        b'{"a":"\xff\xfe"}',  # not UTF-8
        b'{"a":"\\ud800"}',  # a lone surrogate
        b'{"a":NaN}',
        b'{"a":1e400}',
        b'{"a":"x"' + b"}" * 3,
    ]
    good = [b'{"n":1}', b'{"a":' + b"[" * 500 + b"]" * 500 + b"}", b'{"n":123456789012345678901}']
    path.write_bytes(b"\n".join([good[0], *hostile, *good[1:]]) + b"\n")
    src = await source(tmp_path, path=path)
    batches = await collect(src)
    assert [r.raw for b in batches for r in b.records] == good
    rejected = [r for b in batches for r in b.rejected]
    assert [r.raw for r in rejected] == hostile
    assert all(r.reason.startswith("invalid JSON") for r in rejected)
