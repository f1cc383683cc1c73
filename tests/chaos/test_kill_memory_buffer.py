"""kill -9 of `sluice run` with a memory buffer loses at most what docs/configuration.md states
(`buffer.type`): per sink, `max_events` + the sink's `batch.max_events` + two source batches; what
was written before the kill is an exact, ordered prefix of what the source produced."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson

from tests.conftest import SLUICE_TESTING, Spawn, read_log_until, sent_events, wait_for

SOURCE_BATCH, SINK_BATCH, BUFFER_EVENTS = 500, 1000, 5000
LOSS_BOUND = BUFFER_EVENTS + SINK_BATCH + 2 * SOURCE_BATCH


def written_seqs(path: Path) -> list[int]:
    """The ``seq`` of every complete line (a kill can leave a torn last line: not written)."""
    data = path.read_bytes() if path.exists() else b""
    return [orjson.loads(line)["seq"] for line in data[: data.rfind(b"\n") + 1].splitlines()]


def test_kill_9_with_a_full_memory_buffer_loses_at_most_the_documented_bound(
    workdir: Path, spawn: Spawn
) -> None:
    # five batches are written, then the sink's far side stops answering: one batch stays in
    # flight, the buffer fills, the source waits; then the process is killed
    (workdir / "p.yaml").write_text(
        f"sources:\n  gen: {{type: generator, batch_size: {SOURCE_BATCH}, record_bytes: 100}}\n"
        "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    hang_after_writes: 5\n"
        f"    batch: {{max_events: {SINK_BATCH}, max_age_secs: 0.05}}\n"
        f"    buffer: {{type: memory, max_events: {BUFFER_EVENTS}}}\n"
        'admin: {listen: "127.0.0.1:0"}\n'
    )
    process: subprocess.Popen[str] = spawn(
        [*SLUICE_TESTING, "run", "p.yaml", "--log-format", "json"], cwd=workdir
    )
    admin_url = read_log_until(process, "admin.listening")[-1]["url"]

    seen: list[int] = []

    def held_still() -> bool:
        """The source has stopped moving (three equal readings) with a full buffer behind it."""
        counts = sent_events(admin_url)
        seen.append(counts.get("gen", 0))
        full = seen[-1] - counts.get("out", 0) >= BUFFER_EVENTS
        return full and len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    wait_for(held_still, timeout=60, interval=0.1)
    produced = seen[-1]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    written = written_seqs(workdir / "out.jsonl")
    assert written == list(range(len(written))), "written: an ordered prefix, no gap, no repeat"
    assert len(written) > 0
    lost = produced - len(written)
    print(f"produced {produced}, written {len(written)}, lost {lost} (bound {LOSS_BOUND})")
    # the memory buffer really held a full buffer (nothing else keeps it), and no more
    assert BUFFER_EVENTS <= lost <= LOSS_BOUND
