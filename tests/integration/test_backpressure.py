"""A fast source into a slow sink: memory stays bounded and nothing is lost."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import orjson

from tests.conftest import SLUICE_TESTING, wait_for

MiB = 1024 * 1024
BUFFER_BYTES = 8 * MiB
RSS_GROWTH_BOUND = 3 * BUFFER_BYTES
"""Stated bound: after warm-up the process grows by less than three buffers' worth (24 MiB).

The buffer holds at most 8 MiB of record bytes (plus one source batch); Python objects for those
records take about twice their byte size, and the allocator keeps some slack. Without backpressure
the generator (~300k records/s of 400 bytes) would grow the process by ~100 MiB every second."""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_fast_source_slow_sink_keeps_rss_bounded_and_loses_nothing(workdir: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    (workdir / "p.yaml").write_text(
        "sources:\n  gen: {type: generator, record_bytes: 400}\n"
        "sinks:\n  slow:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    delay_secs: 0.1\n    batch: {max_events: 1000}\n"
        f"    buffer: {{max_events: 100000, max_bytes: {BUFFER_BYTES}}}\n"
        "admin: {enabled: false}\n"
    )
    process = spawn([*SLUICE_TESTING, "run", "p.yaml", "--log-format", "json"], cwd=workdir)
    wait_for(lambda: (workdir / "out.jsonl").exists(), timeout=20)
    time.sleep(1.0)  # warm-up: the buffer fills
    baseline = rss(process.pid)
    peak = baseline
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        peak = max(peak, rss(process.pid))
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    growth = peak - baseline
    print(
        f"rss after warm-up {baseline / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB, growth {growth / MiB:.1f} MiB"
    )
    assert growth < RSS_GROWTH_BOUND
    assert peak < 160 * MiB
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    produced = next(e["produced"] for e in events if e["event"] == "generator.stopped")
    written = [
        orjson.loads(line)["seq"] for line in (workdir / "out.jsonl").read_bytes().splitlines()
    ]
    assert written == list(range(produced))
    # the slow sink writes ~10k records/s: the source was held back, not run ahead
    assert produced < 200_000
