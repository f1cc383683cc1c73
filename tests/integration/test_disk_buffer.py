"""A disk buffer keeps what a source cannot replay through a crash (SIGKILL) and a restart."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson

from tests.conftest import SLUICE_TESTING, wait_for

CONFIG = """\
sources:
  gen: {{type: generator, count: {count}, batch_size: 200}}
sinks:
  slow:
    type: flaky
    inputs: [gen]
    path: out.jsonl
    delay_secs: 0.05
    batch: {{max_events: 500}}
    buffer: {{type: disk, max_events: 1000000, max_bytes: 1073741824}}
admin: {{enabled: false}}
"""


def seqs(path: Path) -> list[int]:
    return (
        [orjson.loads(line)["seq"] for line in path.read_bytes().splitlines()]
        if path.exists()
        else []
    )


def test_records_buffered_on_disk_are_written_after_a_crash(workdir: Path) -> None:
    (workdir / "p.yaml").write_text(CONFIG.format(count=30000))
    log = workdir / "run1.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([*SLUICE_TESTING, "run", "p.yaml"], cwd=workdir, stderr=stderr)
    try:
        # the generator ends in a moment (every record is then on disk); the slow sink is behind
        wait_for(lambda: "source.finished" in log.read_text(), timeout=30)
        wait_for(lambda: (workdir / ".sluice/sinks/slow/buffer/cursor.json").exists(), timeout=20)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    before = len(set(seqs(workdir / "out.jsonl")))
    assert before < 30000, "the crash happened mid-way"
    # the restarted process generates nothing new: everything left comes from the disk buffer
    (workdir / "p.yaml").write_text(CONFIG.format(count=0))
    done = subprocess.run(
        [*SLUICE_TESTING, "run", "p.yaml"], cwd=workdir, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    written = seqs(workdir / "out.jsonl")
    assert sorted(set(written)) == list(range(30000))  # nothing lost
    assert len(written) - 30000 <= 500  # at most the batch in flight at the crash is repeated


def test_a_stop_while_the_sink_is_down_keeps_the_backlog_on_disk_and_exits_0(workdir: Path) -> None:
    config = """\
sources:
  gen: {{type: generator, count: {count}}}
sinks:
  down:
    type: flaky
    inputs: [gen]
    path: out.jsonl
    fail_first_writes: {failures}
    retry: {{initial_backoff_secs: 0.05, max_backoff_secs: 0.2}}
    buffer: {{type: disk, max_events: 100000, max_bytes: 104857600}}
shutdown: {{drain_timeout_secs: 3600}}
admin: {{enabled: false}}
"""
    (workdir / "p.yaml").write_text(config.format(count=1000, failures=1_000_000))
    log = workdir / "run1.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([*SLUICE_TESTING, "run", "p.yaml"], cwd=workdir, stderr=stderr)
    try:
        wait_for(lambda: "sink.write.retrying" in log.read_text(), timeout=30)
        process.send_signal(signal.SIGTERM)
        # the drain timeout is an hour: exiting at all (and with 0, not the drain timeout's 1)
        # shows the stop gave up the retries at once, the batch being safe on disk
        assert process.wait(timeout=120) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "sink.write.abandoned" in text
    assert "pipeline.drain_timeout" not in text
    assert "disk_backlog_records=1000" in text
    assert seqs(workdir / "out.jsonl") == []
    (workdir / "p.yaml").write_text(config.format(count=0, failures=0))
    done = subprocess.run(
        [*SLUICE_TESTING, "run", "p.yaml"], cwd=workdir, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert seqs(workdir / "out.jsonl") == list(range(1000))
