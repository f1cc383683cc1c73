"""``sluice run`` as a user runs it: a real process, real files, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import orjson

from tests.conftest import SLUICE, SLUICE_TESTING, Spawn, read_log_until, wait_for


def log_events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def event(stderr: str, name: str) -> dict[str, object]:
    return next(e for e in log_events(stderr) if e["event"] == name)


def seqs(path: Path) -> list[int]:
    return [orjson.loads(line)["seq"] for line in path.read_bytes().splitlines()]


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_generator_to_file_writes_exactly_the_records_generated(workdir: Path) -> None:
    (workdir / "p.yaml").write_text(
        "sources:\n  gen: {type: generator, count: 50000}\n"
        "sinks:\n  out: {type: file, inputs: [gen], path: out/records.jsonl}\n"
        "admin: {enabled: false}\n"
    )
    done = subprocess.run([*SLUICE, "run", "p.yaml"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert seqs(workdir / "out" / "records.jsonl") == list(range(50000))


def test_sigterm_stops_cleanly_and_every_generated_record_is_written(workdir: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    (workdir / "p.yaml").write_text(
        "sources:\n  gen: {type: generator, events_per_sec: 20000}\n"
        "sinks:\n  out: {type: file, inputs: [gen], path: out.jsonl}\n"
        "admin: {enabled: false}\n"
    )
    process = spawn([*SLUICE, "run", "p.yaml", "--log-format", "json"], cwd=workdir)
    wait_for(lambda: count_lines(workdir / "out.jsonl") > 5000, timeout=20)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    produced = int(event(stderr, "generator.stopped")["produced"])  # type: ignore[call-overload]
    assert seqs(workdir / "out.jsonl") == list(range(produced))
    assert event(stderr, "pipeline.stopped")["unwritten_records"] == 0


def test_listen_is_the_same_as_run(workdir: Path) -> None:
    (workdir / "p.yaml").write_text(
        "sources:\n  gen: {type: generator, count: 10}\n"
        "sinks:\n  out: {type: file, inputs: [gen], path: out.jsonl}\n"
        "admin: {enabled: false}\n"
    )
    done = subprocess.run(
        [*SLUICE, "listen", "--config", "p.yaml"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert count_lines(workdir / "out.jsonl") == 10


def test_second_signal_exits_at_once_and_says_what_was_not_written(workdir: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    (workdir / "p.yaml").write_text(
        "sources:\n  gen: {type: generator}\n"
        "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    fail_first_writes: 1000000\n    retry: {initial_backoff_secs: 0.05, max_backoff_secs: 0.1}\n"
        "admin: {enabled: false}\n"
    )
    process = spawn([*SLUICE_TESTING, "run", "p.yaml", "--log-format", "json"], cwd=workdir)
    read_log_until(process, "sink.write.retrying")  # records in hand, and the sink failing
    process.send_signal(signal.SIGTERM)  # the drain starts, but the sink keeps failing
    read_log_until(process, "pipeline.stopping")  # the first signal was handled
    assert process.poll() is None, "still draining"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    forced = event(stderr, "pipeline.forced_exit")
    assert int(forced["unwritten_records"]) > 0  # type: ignore[call-overload]


def test_file_source_resumes_after_sigterm_without_skipping_or_repeating(
    workdir: Path, spawn: Spawn
) -> None:
    total = 60000
    with (workdir / "in.jsonl").open("wb") as f:
        for i in range(total):
            f.write(orjson.dumps({"seq": i, "pad": "p" * 100}) + b"\n")
    (workdir / "p.yaml").write_text(
        "sources:\n  f:\n    type: file\n    path: in.jsonl\n    read_bytes: 65536\n"
        "    rate_limit: {events_per_sec: 15000, burst: 1000}\n"
        "sinks:\n  out: {type: file, inputs: [f], path: out.jsonl}\n"
        "admin: {enabled: false}\n"
    )
    process = spawn([*SLUICE, "run", "p.yaml"], cwd=workdir)
    wait_for(lambda: count_lines(workdir / "out.jsonl") > 10000, timeout=30)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    first_run = count_lines(workdir / "out.jsonl")
    assert 0 < first_run < total, "stopped mid-file"
    again = subprocess.run(
        [*SLUICE, "run", "p.yaml"], cwd=workdir, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert "file.resuming" in again.stderr
    assert seqs(workdir / "out.jsonl") == list(range(total))


def test_custom_sink_package_is_found_and_used(workdir: Path) -> None:
    plugins = subprocess.run([*SLUICE, "plugins"], capture_output=True, text=True, timeout=60)
    assert plugins.returncode == 0
    assert "kind_counter" in plugins.stdout
    assert "sluice-example-sink" in plugins.stdout
    (workdir / "p.yaml").write_text(
        "sources:\n  a: {type: generator, count: 30, kind: ticker}\n"
        "  b: {type: generator, count: 12, kind: heartbeat}\n"
        "sinks:\n  counts: {type: kind_counter, inputs: [a, b], path: counts.json}\n"
        "admin: {enabled: false}\n"
    )
    done = subprocess.run([*SLUICE, "run", "p.yaml"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads((workdir / "counts.json").read_text()) == {"heartbeat": 12, "ticker": 30}


def test_stdout_sink_writes_json_lines_to_standard_output(workdir: Path) -> None:
    (workdir / "p.yaml").write_text(
        "sources:\n  gen: {type: generator, count: 1234}\n"
        "sinks:\n  out: {type: stdout, inputs: [gen]}\n"
        "admin: {enabled: false}\n"
    )
    done = subprocess.run([*SLUICE, "run", "p.yaml"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["seq"] for line in done.stdout.splitlines()] == list(range(1234))
