"""kill -9 of `sluice run` reading a file into a file sink, then a restart: nothing is lost, and
the lines written twice are exactly those written after the last checkpoint, which is at most one
checkpoint interval's worth at the source's rate (plus its burst and a read's worth of lines)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson

from tests.conftest import SLUICE, Spawn, wait_for

TOTAL = 40_000
RATE, BURST, INTERVAL = 8000, 1000, 0.5
READ_BYTES = 65536
LINE = len(orjson.dumps({"seq": 0, "pad": "p" * 100})) + 1  # the shortest line
DUPLICATE_BOUND = RATE * INTERVAL + BURST + 2 * (READ_BYTES // LINE + 1)


def complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_kill_9_mid_file_then_restart_loses_nothing_and_repeats_one_interval_at_most(
    workdir: Path, spawn: Spawn
) -> None:
    source = workdir / "in.jsonl"
    lines = [orjson.dumps({"seq": i, "pad": "p" * 100}) + b"\n" for i in range(TOTAL)]
    source.write_bytes(b"".join(lines))
    (workdir / "p.yaml").write_text(
        f"sources:\n  f:\n    type: file\n    path: in.jsonl\n    read_bytes: {READ_BYTES}\n"
        f"    checkpoint_interval_secs: {INTERVAL}\n"
        f"    rate_limit: {{events_per_sec: {RATE}, burst: {BURST}}}\n"
        "sinks:\n  out: {type: file, inputs: [f], path: out.jsonl}\n"
        "admin: {enabled: false}\n"
    )
    out = workdir / "out.jsonl"
    checkpoint = workdir / ".sluice" / "sources" / "f" / "checkpoint.json"
    process: subprocess.Popen[str] = spawn([*SLUICE, "run", "p.yaml"], cwd=workdir)
    # past a few checkpoints, well before the end (the rate limit makes the run ~5 s long)
    wait_for(lambda: checkpoint.exists() and complete_lines(out) > 8000, timeout=60)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    data = out.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    first_run = [orjson.loads(line)["seq"] for line in whole.splitlines()]
    assert first_run == list(range(len(first_run))), "an ordered prefix of the file"
    assert len(first_run) < TOTAL, "killed mid-file"
    if whole == data:  # the kill did not land in a write: leave the torn line such a kill leaves
        with out.open("ab") as f:
            f.write(lines[len(first_run)][:20])
    offset = orjson.loads(checkpoint.read_bytes())["offset"]
    resume_at = source.read_bytes()[:offset].count(b"\n")
    assert 0 < resume_at <= len(first_run), "the checkpoint never passes what was written"

    again = subprocess.run(
        [*SLUICE, "run", "p.yaml", "--log-format", "json"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert '"file.resuming"' in again.stderr
    assert '"file.torn_line_cut"' in again.stderr

    seqs = [orjson.loads(line)["seq"] for line in out.read_bytes().splitlines()]
    # exactly: the first run's prefix, then everything from the checkpoint on
    assert seqs == list(range(len(first_run))) + list(range(resume_at, TOTAL))
    assert set(seqs) == set(range(TOTAL)), "nothing lost"
    duplicates = len(seqs) - TOTAL
    print(f"first run wrote {len(first_run)}, resumed at {resume_at}: {duplicates} written twice")
    assert duplicates == len(first_run) - resume_at
    assert duplicates <= DUPLICATE_BOUND
