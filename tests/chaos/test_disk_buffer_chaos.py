"""Chaos on the disk buffer, with the real ``sluice run`` process: a corrupt frame in the middle of
a segment, a full disk (a real tmpfs), kill -9 in mid-append and after the source ended.

Every test counts records by the generator's gap-free ``seq``: produced, stored in the buffer,
delivered (in the sink's file), duplicated, lost and skipped, and asserts those numbers. The sink
is the ``flaky`` test double, taken down and brought back from outside through its
``closed_while`` file. Loopback only; every wait is on a condition with a bound.
"""

from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.runtime.buffers.disk import read_frames
from sluice.testing import free_port
from tests.conftest import SLUICE_TESTING, wait_for
from tests.volumes import fill, small_tmpfs

SINK = "out"


def config(
    *,
    count: int,
    data_dir: Path,
    batch_size: int = 100,
    record_bytes: int = 200,
    events_per_sec: float | None = None,
    batch_events: int = 500,
    delay_secs: float = 0.0,
    max_bytes: int = 64 * 1024 * 1024,
    admin_port: int | None = None,
) -> str:
    rate = f", events_per_sec: {events_per_sec}" if events_per_sec else ""
    admin = (
        f"admin: {{listen: '127.0.0.1:{admin_port}'}}" if admin_port else "admin: {enabled: false}"
    )
    return f"""\
data_dir: {data_dir}
sources:
  gen: {{type: generator, count: {count}, batch_size: {batch_size}, record_bytes: {record_bytes}{rate}}}
sinks:
  {SINK}:
    type: flaky
    inputs: [gen]
    path: out.jsonl
    closed_while: closed
    delay_secs: {delay_secs}
    batch: {{max_events: {batch_events}, max_age_secs: 0.05}}
    retry: {{initial_backoff_secs: 0.02, max_backoff_secs: 0.2}}
    buffer: {{type: disk, max_events: 10000000, max_bytes: {max_bytes}}}
shutdown: {{drain_timeout_secs: 600}}
{admin}
"""


@dataclass
class Run:
    """One ``sluice run`` with JSON logs in a file."""

    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_bytes().splitlines():
            if line.startswith(b"{"):
                out.append(orjson.loads(line))
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def has(self, name: str) -> bool:
        return f'"{name}"'.encode() in self.log.read_bytes()

    def summary(self, component_id: str) -> dict[str, Any]:
        [line] = [
            line
            for line in self.events("component.summary")
            if line["component_id"] == component_id
        ]
        return line

    def wait(self) -> int:
        return self.process.wait(timeout=120)


@pytest.fixture
def runs(workdir: Path) -> Iterator[Any]:
    started: list[Run] = []

    def start(yaml_text: str, name: str) -> Run:
        (workdir / f"{name}.yaml").write_text(yaml_text)
        log = workdir / f"{name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*SLUICE_TESTING, "run", f"{name}.yaml", "--log-format", "json"],
                cwd=workdir,
                stderr=stderr,
                stdout=subprocess.DEVNULL,
            )
        run = Run(process, log)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(timeout=10)


def delivered(workdir: Path) -> list[int]:
    """The seqs of the complete lines the sink wrote: read while the sink's process appends, the
    last line can be half written (a large append is more than one write)."""
    path = workdir / "out.jsonl"
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [orjson.loads(line)["seq"] for line in complete.splitlines()]


def stored(buffer_dir: Path) -> list[int]:
    """The seqs in the buffer's log files now (every valid frame, consumed or not)."""
    seqs = []
    for log in sorted(buffer_dir.glob("*.log"), key=lambda p: int(p.stem)):
        for _, _, rows in read_frames(log.read_bytes()):
            seqs += [orjson.loads(raw)["seq"] for raw, _, _ in rows]
    return seqs


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())
    except OSError:
        return 0, {}


# -- a corrupt frame in the middle of a segment ----------------------------------------------------


def test_a_corrupt_frame_mid_segment_costs_that_frame_only(workdir: Path, runs: Any) -> None:
    produced, per_frame = 10_000, 100
    data_dir = workdir / "data"
    buffer_dir = data_dir / "sinks" / SINK / "buffer"
    (workdir / "closed").touch()  # the sink is down: everything stays in the buffer
    first = runs(config(count=produced, data_dir=data_dir), "first")
    wait_for(lambda: first.has("source.finished") and first.has("sink.write.retrying"), 60)
    first.process.send_signal(signal.SIGTERM)
    assert first.wait() == 0
    [stopped] = first.events("pipeline.stopped")
    assert stopped["disk_backlog_records"] == produced
    logs = sorted(buffer_dir.glob("*.log"))
    assert [p.name for p in logs] == ["1.log"]  # one segment: the frame is in its middle
    frames = list(read_frames(logs[0].read_bytes()))
    assert len(frames) == produced // per_frame
    bad_offset, _, bad_rows = frames[50]
    bad_seqs = {orjson.loads(raw)["seq"] for raw, _, _ in bad_rows}
    data = bytearray(logs[0].read_bytes())
    data[bad_offset + 40] ^= 0xFF  # one flipped byte in frame 51's payload
    logs[0].write_bytes(bytes(data))

    (workdir / "closed").unlink()
    second = runs(config(count=0, data_dir=data_dir), "second")
    assert second.wait() == 0
    written = delivered(workdir)
    intact_after = [s for s in written if s > max(bad_seqs)]
    assert len(bad_seqs) == per_frame
    assert sorted(written) == [s for s in range(produced) if s not in bad_seqs]
    assert len(written) == len(set(written))  # 0 duplicated
    assert len(intact_after) == produced - 5100  # every intact frame after the bad one
    [skipped] = second.events("buffer.corrupt_frames_skipped")
    assert skipped["path"] == str(logs[0])
    assert skipped["offset"] == bad_offset
    assert skipped["frames"] == 1
    summary = second.summary(SINK)
    assert summary["corrupt_frames"] == 1
    assert summary["corrupt_bytes"] == frames[50][1]
    assert summary["sent"] == produced - per_frame
    assert list(buffer_dir.glob("*.log")) == []  # drained: the consumed log is gone


# -- a small volume ----------------------------------------------------------------------------


@pytest.fixture
def volume(workdir: Path) -> Iterator[Path]:
    with small_tmpfs(workdir / "volume", 4 * 1024 * 1024) as path:
        yield path


def test_a_full_disk_holds_the_source_marks_the_sink_not_ready_and_loses_nothing(
    workdir: Path, volume: Path, runs: Any
) -> None:
    produced = 5000  # ~2 MB of records; 512 KiB free
    data_dir = volume / "data"
    filler = fill(volume, leave_bytes=512 * 1024)
    (workdir / "closed").touch()
    port = free_port()
    run = runs(config(count=produced, data_dir=data_dir, record_bytes=400, admin_port=port), "r")
    buffer_dir = data_dir / "sinks" / SINK / "buffer"

    def buffer_not_ready() -> str | None:
        status, body = readyz(port)
        reason = body.get("not_ready", {}).get(f"sink/{SINK}", "")
        return reason if status == 503 and "buffer writes failing" in reason else None

    reason = wait_for(buffer_not_ready, 60)
    assert reason.startswith(f"buffer writes failing: disk buffer {buffer_dir}/")
    assert reason.endswith(".log: No space left on device")
    [failing] = run.events("buffer.write.failing")[:1]
    assert failing["path"].startswith(str(buffer_dir)) and failing["errno"] == "ENOSPC"
    assert not run.has("source.finished")  # held: backpressure up to the source
    assert buffer_not_ready() is not None  # still: it does not heal while the disk is full
    stored_while_full = len(stored(buffer_dir))
    assert 0 < stored_while_full < produced

    filler.unlink()  # space returns: the buffer heals by itself, the source goes on
    wait_for(lambda: run.has("buffer.write.recovered") and run.has("source.finished"), 60)
    status, body = readyz(port)
    assert status == 503 and "buffer" not in body["not_ready"][f"sink/{SINK}"]  # the sink is down
    (workdir / "closed").unlink()
    assert run.wait() == 0
    written = delivered(workdir)
    assert written == list(range(produced))  # 0 lost, 0 duplicated, in order
    assert list(buffer_dir.glob("*.log")) == []


def test_a_buffer_on_a_volume_smaller_than_its_traffic_reclaims_space_as_it_goes(
    workdir: Path, volume: Path, runs: Any
) -> None:
    # 8 MB of records through a 4 MiB volume, the buffer allowed 512 KiB (segments of 64 KiB):
    # it only works if consumed segments are deleted as the reader passes them
    produced = 40_000
    data_dir = volume / "data"
    run = runs(
        config(
            count=produced,
            data_dir=data_dir,
            max_bytes=512 * 1024,
            batch_events=200,
            delay_secs=0.002,
        ),
        "r",
    )
    assert run.wait() == 0
    assert delivered(workdir) == list(range(produced))
    assert not run.has("buffer.write.failing")  # the disk never filled
    assert run.summary(SINK)["sent"] == produced
    assert list((data_dir / "sinks" / SINK / "buffer").glob("*.log")) == []


# -- kill -9 ---------------------------------------------------------------------------------------


def test_kill_9_in_mid_append_then_restart_loses_nothing_stored(workdir: Path, runs: Any) -> None:
    batch_events = 500
    data_dir = workdir / "data"
    buffer_dir = data_dir / "sinks" / SINK / "buffer"
    first = runs(
        config(
            count=1_000_000,
            data_dir=data_dir,
            record_bytes=100,
            events_per_sec=50_000,
            batch_events=batch_events,
            delay_secs=0.02,  # the sink is behind the source: a backlog builds on disk
        ),
        "first",
    )
    wait_for(lambda: len(delivered(workdir)) >= 20_000, 60)
    first.process.send_signal(signal.SIGKILL)  # the source is appending all the while
    first.wait()
    assert not first.has("source.finished")
    before = delivered(workdir)
    in_buffer = stored(buffer_dir)
    produced_stored = max([*before, *in_buffer]) + 1  # appended before the kill, in order
    assert sorted(set(before) | set(in_buffer)) == list(range(produced_stored))
    assert produced_stored > len(set(before))  # a backlog was on disk at the kill

    second = runs(config(count=0, data_dir=data_dir, batch_events=batch_events), "second")
    assert second.wait() == 0
    written = delivered(workdir)
    lost = produced_stored - len(set(written))
    duplicated = len(written) - len(set(written))
    assert set(written) == set(range(produced_stored))
    assert lost == 0
    # at-least-once: only batches written after the last cursor update can repeat (the batch in
    # flight at the kill, and at most one more whose cursor was being written)
    assert duplicated <= 2 * batch_events
    print(f"kill -9 mid-append: stored {produced_stored}, duplicated {duplicated}, lost {lost}")


def test_kill_9_with_the_backlog_on_disk_loses_and_repeats_nothing(
    workdir: Path, runs: Any
) -> None:
    produced = 30_000
    data_dir = workdir / "data"
    (workdir / "closed").touch()  # the sink is down: every record waits in the buffer
    first = runs(config(count=produced, data_dir=data_dir), "first")
    wait_for(lambda: first.has("source.finished") and first.has("sink.write.retrying"), 60)
    first.process.send_signal(signal.SIGKILL)
    first.wait()
    assert sorted(stored(data_dir / "sinks" / SINK / "buffer")) == list(range(produced))
    (workdir / "closed").unlink()
    second = runs(config(count=0, data_dir=data_dir), "second")
    assert second.wait() == 0
    assert delivered(workdir) == list(range(produced))  # 0 lost, 0 duplicated, in order
