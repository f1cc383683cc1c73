"""Errors that waiting cannot cure (a directory where the file should be, a parent that is a file,
no permission to create) are met once: the sink is marked broken and its records go to the dead
letters, instead of being retried for ever; errors that can heal (a full disk) are still retried."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from sluice.config import load_config_text
from sluice.errors import BrokenError, RetriableError, classify_os_error
from sluice.runtime.pipeline import Pipeline
from sluice.sinks.file import FileSink, FileSinkConfig
from sluice.testing import registry_with_doubles
from tests.unit.sinks.test_file_sink import ctx, records

REGISTRY = registry_with_doubles()
FAST = "    batch: {max_events: 100, max_age_secs: 0.01}\n    retry: {initial_backoff_secs: 0.01}\n"


def build(yaml_text: str) -> Pipeline:
    # the path is made unusable after `sluice check` would have passed: skip the path checks
    return Pipeline.build(load_config_text(yaml_text, REGISTRY, check_paths=False), REGISTRY)


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize(
    ("code", "broken"),
    [
        (errno.EISDIR, True),
        (errno.ENOTDIR, True),
        (errno.EACCES, True),
        (errno.EROFS, True),
        (errno.ENOSPC, False),
        (errno.EIO, False),
        (errno.EMFILE, False),
    ],
    ids=lambda v: errno.errorcode.get(v, str(v)) if isinstance(v, int) else str(v),
)
def test_os_errors_are_classified_by_errno(code: int, broken: bool) -> None:
    error = classify_os_error(OSError(code, os.strerror(code)), "cannot open /x/out.jsonl")
    assert isinstance(error, BrokenError if broken else RetriableError)
    assert str(error) == f"cannot open /x/out.jsonl: {os.strerror(code)} ({errno.errorcode[code]})"


async def test_a_directory_as_the_file_sinks_path_dead_letters_every_record_after_one_log_line(
    workdir: Path,
) -> None:
    (workdir / "out.jsonl").mkdir()
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 1000, batch_size: 100}\n"
        "sinks:\n  out:\n    type: file\n    inputs: [gen]\n    path: out.jsonl\n"
        + FAST
        + "admin: {enabled: false}\n"
    )
    with capture_logs() as logs:
        result = await pipeline.run()
    assert result.ok  # nothing lost: every record is a dead letter with its reason
    dead = lines(workdir / ".sluice" / "dead_letters.jsonl")
    assert [letter["record"]["seq"] for letter in dead] == list(range(1000))
    assert {letter["component_id"] for letter in dead} == {"out"}
    assert all("EISDIR" in letter["reason"] for letter in dead)
    assert all(str(workdir / "out.jsonl") in letter["reason"] for letter in dead)
    broken = [entry for entry in logs if entry["event"] == "sink.broken"]
    assert len(broken) == 1
    assert "out.jsonl: Is a directory (EISDIR)" in broken[0]["error"]
    assert broken[0]["log_level"] == "error"
    worker = pipeline.sink("out")
    assert worker is not None
    totals = worker.metrics.totals()
    assert totals["retries"] == 0
    assert totals["dead_letters"] == 1000
    assert not any(entry["event"] == "sink.start.failed" for entry in logs)
    readiness = await worker.readiness()
    assert not readiness.ready
    assert "broken" in readiness.reason


async def test_a_broken_dead_letter_sink_fails_the_run(workdir: Path) -> None:
    (workdir / ".sluice" / "dead_letters.jsonl").mkdir(parents=True)
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 10}\n"
        "sinks:\n  out: {type: file, inputs: [gen], path: out.jsonl}\n"
        "admin: {enabled: false}\n"
    )
    with capture_logs() as logs:
        result = await pipeline.run()
    assert not result.ok
    assert result.error is not None
    assert "dead_letters" in result.error
    assert "EISDIR" in result.error
    broken = [entry for entry in logs if entry["event"] == "sink.broken"]
    assert [entry["then"] for entry in broken] == ["the run fails"]


async def test_a_directory_that_appears_after_start_breaks_the_file_sink_on_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    sink = FileSink("out", FileSinkConfig(type="file", inputs=["x"], path=path))
    await sink.start(ctx(tmp_path))
    await sink.write_batch(records(0, 1))
    real_write = os.write

    def full_once(fd: int, data: Any) -> int:
        monkeypatch.setattr(os, "write", real_write)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_once)
    with pytest.raises(RetriableError, match="No space left"):  # a full disk can heal
        await sink.write_batch(records(1, 1))
    path.rename(tmp_path / "moved.jsonl")
    path.mkdir()  # someone puts a directory where the file was
    with pytest.raises(BrokenError, match=r"Is a directory \(EISDIR\)"):
        await sink.write_batch(records(1, 1))
    await sink.close()
    assert (tmp_path / "moved.jsonl").read_bytes() == b'{"n":0}\n'


async def test_no_permission_to_create_the_file_breaks_the_file_sink_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chmod does not deny root: inject the EACCES the kernel gives an unprivileged user
    def denied(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    sink = FileSink("out", FileSinkConfig(type="file", inputs=["x"], path=tmp_path / "o.jsonl"))
    with pytest.raises(BrokenError, match=r"cannot open .*o\.jsonl: Permission denied \(EACCES\)"):
        await sink.start(ctx(tmp_path))


async def test_a_parent_that_is_a_file_breaks_the_file_sink_at_start(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    for path in (tmp_path / "taken" / "out.jsonl", tmp_path / "taken" / "a" / "out.jsonl"):
        sink = FileSink("out", FileSinkConfig(type="file", inputs=["x"], path=path))
        with pytest.raises(BrokenError, match=r"Not a directory \(ENOTDIR\)"):
            await sink.start(ctx(tmp_path))


async def test_a_full_disk_at_start_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    calls = {"n": 0}

    def full_once(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(os, "open", full_once)
    sink = FileSink("out", FileSinkConfig(type="file", inputs=["x"], path=tmp_path / "o.jsonl"))
    with pytest.raises(RetriableError, match=r"\(ENOSPC\)"):
        await sink.start(ctx(tmp_path))
    await sink.start(ctx(tmp_path))
    await sink.write_batch(records(0, 1))
    await sink.close()
    assert (tmp_path / "o.jsonl").read_bytes() == b'{"n":0}\n'


@pytest.mark.parametrize("buffer", ["memory", "disk"])
async def test_a_dead_letter_sink_that_breaks_mid_run_counts_what_it_never_wrote(
    workdir: Path, buffer: str
) -> None:
    """Every record of ``out`` is refused (permanent), so each goes to the dead letters; those break
    after two batches: the run fails and ``unwritten`` is what neither sink wrote (a disk buffer
    keeps its records for the next start, so they are not lost)."""
    records = "".join(f"      - {{seq: {i}}}\n" for i in range(40))
    pipeline = build(
        "sources:\n  src:\n    type: list\n    batch_size: 5\n    records:\n"
        + records
        + "sinks:\n  out:\n    type: flaky\n    inputs: [src]\n    path: out.jsonl\n"
        "    fail_first_writes: 1000000\n    failure: permanent\n"
        "    batch: {max_events: 5, max_age_secs: 0.01}\n"
        "dead_letters:\n  type: flaky\n  path: dead.jsonl\n  broken_after_writes: 2\n"
        f"  buffer: {{type: {buffer}}}\n"
        "  batch: {max_events: 5, max_age_secs: 0.01}\n"
        "admin: {enabled: false}\n"
    )
    with capture_logs() as logs:
        result = await pipeline.run()
    assert not result.ok
    assert result.error is not None and "broken after 2 writes" in result.error
    out, dead = pipeline.sink("out"), pipeline.sink("dead_letters")
    assert out is not None and dead is not None
    received = out.metrics.totals()["received"]
    written = len(lines(workdir / "dead.jsonl"))
    assert written == 10  # two batches of five
    assert out.metrics.totals()["sent"] == 0
    assert dead.metrics.totals()["received"] == received
    kept = 0
    if buffer == "disk":
        backlog = dead.backlog()
        assert backlog is not None
        kept = backlog[0]
        assert kept == received - written  # nothing lost: on disk for the next start
    assert result.unwritten == received - written - kept
    stopped = [entry for entry in logs if entry["event"] == "pipeline.stopped"]
    assert [entry["unwritten_records"] for entry in stopped] == [result.unwritten]
    assert dead.metrics.totals()["unwritten"] == result.unwritten
