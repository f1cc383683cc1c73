"""A fast source into a slow sink: memory stays bounded and nothing is lost."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import orjson

from tests.conftest import SLUICE_TESTING, read_log_until, sent_events, wait_for

MiB = 1024 * 1024
BUFFER_BYTES = 8 * MiB
RSS_GROWTH_BOUND = 3 * BUFFER_BYTES
"""Stated bound: after warm-up the process grows by less than three buffers' worth (24 MiB).

The buffer holds at most 8 MiB of record bytes (plus one source batch); Python objects for those
records take about twice their byte size, and the allocator keeps some slack. Without backpressure
the generator (~300k records/s of 400 bytes) would grow the process by ~100 MiB every second."""


RECORD_BYTES = 400
IN_FLIGHT_BOUND = BUFFER_BYTES // RECORD_BYTES + 500 + 2 * 1000 + 2 * 500
"""Records the source passed on that the sink has not written: a full buffer (which takes a
source batch of 500 whole while it has room, so up to one batch over), the sink batch being
written (1,000) and the source batches in hand; measured: 23,000 at most, and the bound leaves
one more sink batch of slack. Without backpressure the source runs ahead by ~300,000 a second."""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sent(admin_url: str) -> tuple[int, int]:
    """(records the source passed on, records the sink wrote)."""
    counts = sent_events(admin_url)
    return counts["gen"], counts["slow"]


def test_fast_source_slow_sink_keeps_rss_bounded_and_loses_nothing(workdir: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    (workdir / "p.yaml").write_text(
        f"sources:\n  gen: {{type: generator, record_bytes: {RECORD_BYTES}}}\n"
        "sinks:\n  slow:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    delay_secs: 0.1\n    batch: {max_events: 1000}\n"
        f"    buffer: {{max_events: 100000, max_bytes: {BUFFER_BYTES}}}\n"
        'admin: {listen: "127.0.0.1:0"}\n'
    )
    process = spawn([*SLUICE_TESTING, "run", "p.yaml", "--log-format", "json"], cwd=workdir)
    admin_url = read_log_until(process, "admin.listening")[-1]["url"]
    # warm-up: the buffer fills (the source is more than half a buffer ahead of the sink)
    wait_for(lambda: (s := sent(admin_url))[0] - s[1] > IN_FLIGHT_BOUND // 2, timeout=60)
    baseline = rss(process.pid)
    peak, ahead = baseline, 0
    _, written_at_start = sent(admin_url)
    written = written_at_start
    while written < written_at_start + 30_000:  # ~3 s of the slow sink; bounded by the test timeout
        peak = max(peak, rss(process.pid))
        passed_on, written = sent(admin_url)
        ahead = max(ahead, passed_on - written)
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
    # the source was held back, not run ahead: never more than the buffer and what is in hand
    assert ahead <= IN_FLIGHT_BOUND
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    produced = next(e["produced"] for e in events if e["event"] == "generator.stopped")
    lines = (workdir / "out.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["seq"] for line in lines] == list(range(produced))
