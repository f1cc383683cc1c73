"""What metrics and rate limiting cost: generator -> file throughput with metrics off, on, and on
with a rate limit too high to ever wait (so only the token bucket's bookkeeping is paid).

Every variant runs as `sluice` would (the pipeline plus its admin server, history sampler and
loop monitor), each run in its own fresh subprocess, variants interleaved round by round so that
noise from other work on the machine hits them alike; the medians and the ratios to the baseline
(metrics off) measured in this same run are printed.

    python benchmarks/metrics_overhead.py [--count 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "metrics off": {"metrics": False, "rate_limit": False},
    "metrics on": {"metrics": True, "rate_limit": False},
    "metrics on + rate_limit": {"metrics": True, "rate_limit": True},
}


def child(variant: str, count: int, workdir: Path) -> None:
    import structlog

    from sluice.config import load_config_text
    from sluice.logs import configure_logging
    from sluice.metrics import Metrics
    from sluice.observability.service import Observability
    from sluice.registry import Registry
    from sluice.runtime.pipeline import Pipeline

    options = VARIANTS[variant]
    limit = (
        "rate_limit: {events_per_sec: 1000000000, burst: 1000000}" if options["rate_limit"] else ""
    )
    config = f"""
data_dir: {workdir}/data
admin: {{listen: "127.0.0.1:0", metrics: {str(options["metrics"]).lower()}}}
sources:
  gen: {{type: generator, count: {count}, record_bytes: 400, batch_size: 1000, {limit}}}
sinks:
  out:
    type: file
    path: {workdir}/out.jsonl
    inputs: [gen]
    batch: {{max_events: 5000, max_bytes: 4194304, max_age_secs: 0.2}}
    {limit}
"""
    configure_logging("warning", "text")
    registry = Registry.from_entry_points()
    loaded = load_config_text(config, registry)
    pipeline = Pipeline.build(loaded, registry, Metrics(enabled=bool(options["metrics"])))

    async def run() -> tuple[float, float]:
        observability = Observability(pipeline, loaded.model)
        await observability.start()
        cpu0 = _cpu()
        t0 = time.perf_counter()
        result = await pipeline.run()
        elapsed = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        await observability.close()
        assert result.ok, result.error
        return elapsed, cpu

    elapsed, cpu = asyncio.run(run())
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    written = 0
    with (workdir / "out.jsonl").open("rb") as f:
        while chunk := f.read(1 << 22):
            written += chunk.count(b"\n")
    assert written == count, f"wrote {written} of {count}"
    structlog.reset_defaults()
    print(json.dumps({"elapsed": elapsed, "cpu": cpu, "rss_mb": peak_rss_mb, "count": count}))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parent(count: int, rounds: int) -> None:
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    rng = random.Random(7)
    for round_no in range(rounds):
        rng.shuffle(order)
        for variant in order:
            with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        variant,
                        "--count",
                        str(count),
                        "--workdir",
                        tmp,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    env={**os.environ, "PYTHONHASHSEED": "0"},
                )
            if out.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{out.stderr}")
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {round_no + 1}/{rounds} done", file=sys.stderr)

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    base = "metrics off"
    base_rate = count / median(base, "elapsed")
    base_cpu = median(base, "cpu") / count * 1e6
    print(f"generator -> file, {count:,} records of 400 bytes, median of {rounds} runs each")
    print(
        f"{'variant':<26}{'records/s':>12}{'ratio':>8}{'CPU us/rec':>12}{'ratio':>8}{'peak RSS MB':>13}"
    )
    for variant in VARIANTS:
        rate = count / median(variant, "elapsed")
        cpu = median(variant, "cpu") / count * 1e6
        print(
            f"{variant:<26}{rate:>12,.0f}{rate / base_rate:>8.3f}{cpu:>12.2f}"
            f"{cpu / base_cpu:>8.3f}{median(variant, 'rss_mb'):>13.1f}"
        )
    spread = {
        v: (max(r["elapsed"] for r in rs) - min(r["elapsed"] for r in rs)) / median(v, "elapsed")
        for v, rs in results.items()
    }
    print(
        "run-to-run spread of elapsed time: " + ", ".join(f"{v} {s:.0%}" for v, s in spread.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=list(VARIANTS))
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.count, args.workdir)
    else:
        parent(args.count, args.rounds)


if __name__ == "__main__":
    main()
