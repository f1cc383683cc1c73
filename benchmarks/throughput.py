"""Throughput of generator -> file through sluice, beside a hand-written asyncio loop.

Both write the same 400-byte JSON records (built by the same function) to a file; each run is a
fresh subprocess, timed from inside (interpreter start-up excluded), with its CPU time and peak RSS.
Runs alternate so that machine noise hits both; the median of each is reported with the ratio.

    python benchmarks/throughput.py [--records 2000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECORD_BYTES = 400
BATCH = 500
WRITE_EVERY = 2000


def _usage() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


async def _baseline(records: int, path: Path) -> float:
    """The minimal hand-written loop: build records, join, append to the file."""
    from sluice.sources.generator import encode_synthetic, now_text, payload_for

    started = time.perf_counter()
    payload = payload_for(RECORD_BYTES, now_text()[1])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pending: list[bytes] = []
    for start in range(0, records, BATCH):
        _, text = now_text()
        pending += [
            encode_synthetic(seq, text, payload)
            for seq in range(start, min(start + BATCH, records))
        ]
        if len(pending) >= WRITE_EVERY:
            os.write(fd, b"\n".join(pending) + b"\n")
            pending = []
        await asyncio.sleep(0)
    if pending:
        os.write(fd, b"\n".join(pending) + b"\n")
    os.close(fd)
    return time.perf_counter() - started


async def _sluice(records: int, path: Path, extra_yaml: str) -> float:
    from sluice.config import load_config_text
    from sluice.logs import configure_logging
    from sluice.registry import Registry
    from sluice.runtime.pipeline import Pipeline

    configure_logging("warning")
    registry = Registry.from_entry_points()
    config = load_config_text(
        f"sources:\n  gen: {{type: generator, count: {records}, record_bytes: {RECORD_BYTES}, batch_size: {BATCH}}}\n"
        f"sinks:\n  out: {{type: file, inputs: [gen], path: '{path}'}}\n"
        f"data_dir: '{path.parent / 'state'}'\n" + extra_yaml,
        registry,
    )
    pipeline = Pipeline.build(config, registry)
    started = time.perf_counter()
    result = await pipeline.run()
    assert result.ok, result
    return time.perf_counter() - started


def child(kind: str, records: int, extra_yaml: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.jsonl"
        import sluice.sources.generator  # noqa: F401 - imports are not part of the measure

        cpu0, _ = _usage()
        if kind == "baseline":
            seconds = asyncio.run(_baseline(records, path))
        else:
            seconds = asyncio.run(_sluice(records, path, extra_yaml))
        cpu1, peak_mb = _usage()
        lines = path.read_bytes().count(b"\n")
        assert lines == records, (lines, records)
    # CPU time includes set-up (config, registry) for sluice: a slight overstatement
    print(
        json.dumps(
            {
                "records": records,
                "seconds": seconds,
                "cpu_secs": cpu1 - cpu0,
                "peak_rss_mb": peak_mb,
            }
        )
    )


def run_child(kind: str, records: int, extra_yaml: str = "") -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--records",
            str(records),
            "--extra-yaml",
            extra_yaml,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def summarize(name: str, runs: list[dict[str, float]]) -> dict[str, float]:
    rate = statistics.median(r["records"] / r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu_secs"] / r["records"] * 1e6 for r in runs)
    rss = max(r["peak_rss_mb"] for r in runs)
    print(f"{name:<34} {rate:>12,.0f} rec/s   {cpu:>6.2f} CPU-s per 1M   peak RSS {rss:>6.1f} MiB")
    return {"rate": rate, "cpu": cpu, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=["baseline", "sluice"])
    parser.add_argument("--extra-yaml", default="admin: {enabled: false}\n")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.records, args.extra_yaml)
        return
    baseline: list[dict[str, float]] = []
    pipeline: list[dict[str, float]] = []
    for _ in range(args.repeat):
        baseline.append(run_child("baseline", args.records))
        pipeline.append(run_child("sluice", args.records, args.extra_yaml))
    print(
        f"generator -> file, {args.records:,} records of {RECORD_BYTES} bytes, median of {args.repeat}, "
        f"{os.cpu_count()} cores"
    )
    base = summarize("hand-written asyncio loop", baseline)
    ours = summarize("sluice run (generator -> file)", pipeline)
    print(f"ratio sluice / hand-written: {ours['rate'] / base['rate']:.2f} (target >= 0.50)")


if __name__ == "__main__":
    main()
