"""ClickHouse past one server: insert throughput to one server vs through a Distributed table.

One run starts a local cluster (``sluice.testing.clickhouse.LocalCluster``: ZooKeeper and two
``clickhouse-server`` processes, cluster ``sluice`` of two shards of one replica each) and, per
round, sends the same ticker records through a real pipeline into the ``clickhouse`` sink three
ways, alternated:

- ``single``: ``url`` of server 0, the shipped single-server table (ReplacingMergeTree, without
  the candles' materialized view, which the cluster DDL does not have either);
- ``replicated``: ``cluster`` with ``insert_into: local``: server 0's ReplicatedReplacingMergeTree
  (what the Distributed table writes to; the cost of ZooKeeper on each insert);
- ``distributed``: ``cluster``: the Distributed table on server 0, sharded by product over both
  servers, with ``insert_distributed_sync`` (the sink's default for a Distributed table).

Each run is a subprocess of its own; printed: rows/s, client CPU, both servers' CPU, and the
ratios to ``single`` of the same round (medians over rounds; the order of the three turns each
round). Usage::

    python benchmarks/clickhouse_cluster.py [--rows 500000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = ("single", "replicated", "distributed")
PRODUCTS = 16


def make_records(count: int) -> list[Any]:
    from sluice.records import Record
    from sluice.testing.clickhouse import ticker_bytes

    return [
        Record(ticker_bytes(n, product_id=f"P{n % PRODUCTS:02d}-USD"), "ticker")
        for n in range(count)
    ]


def single_ddl(work: Path) -> Path:
    """The shipped 18.16 table's statements (database, table), without the candles."""
    from sluice.sinks.clickhouse.ddl import LEGACY_DDL, shipped_sql

    lines = shipped_sql(LEGACY_DDL).read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
    statements = [s.strip() for s in re.split(r";[ \t]*$", text, flags=re.MULTILINE)]
    path = work / "single.sql"
    path.write_text(";\n".join(statements[:2]) + ";\n")
    return path


def sink_lines(kind: str, url: str, table: str) -> str:
    lines = [f"url: {url}", "database: bench", f"table: {table}"]
    if kind == "single":
        lines.append(f"ddl: {os.environ['SLUICE_BENCH_SINGLE_DDL']}")
    else:
        lines.append("cluster: sluice")
    if kind == "replicated":
        lines.append("insert_into: local")
    return ", ".join(lines)


async def through_sink(kind: str, url: str, table: str, records: list[Any]) -> None:
    from sluice.config.loader import load_config_text
    from sluice.logs import configure_logging
    from sluice.runtime.pipeline import Pipeline
    from sluice.testing import ListSource, registry_with_doubles

    configure_logging("warning")
    registry = registry_with_doubles()
    config = load_config_text(
        f"""
admin: {{enabled: false}}
data_dir: {tempfile.mkdtemp(prefix="sluice-bench-")}
sources: {{t: {{type: list, batch_size: 5000}}}}
sinks:
  ch: {{type: clickhouse, inputs: [t], {sink_lines(kind, url, table)}}}
""",
        registry,
    )
    pipeline = Pipeline.build(config, registry)
    [worker] = pipeline.sources
    assert isinstance(worker.source, ListSource)
    worker.source.records = records
    result = await pipeline.run()
    if not result.ok:
        raise RuntimeError(result.error)


def child(kind: str, url: str, table: str, rows: int) -> None:
    import resource

    records = make_records(rows)  # before the clock starts
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    asyncio.run(through_sink(kind, url, table, records))
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"rows": rows, "secs": elapsed, "cpu": cpu}))


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def servers_cpu(cluster: Any) -> float:
    return sum(process_cpu(s.process.pid) for s in cluster.servers if s.process is not None)


def run_round(cluster: Any, kind: str, round_: int, rows: int) -> dict[str, Any]:
    first = cluster.servers[0]
    table = f"{kind}_{round_}"
    before = servers_cpu(cluster)
    command = [sys.executable, __file__, "--child", kind, "--url", first.url, "--table", table]
    done = subprocess.run(
        [*command, "--rows", str(rows)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["server_cpu"] = servers_cpu(cluster) - before
    [[stored]] = first.rows(f"SELECT count() FROM bench.{table}")
    if int(stored) != rows:
        raise RuntimeError(f"{kind}: stored {stored} of {rows} rows")
    result["rows_per_sec"] = rows / result["secs"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.table, args.rows)
        return
    from sluice.testing.clickhouse import LocalCluster

    work = Path(tempfile.mkdtemp(prefix="sluice-ch-cluster-bench-"))
    os.environ["SLUICE_BENCH_SINGLE_DDL"] = str(single_ddl(work))
    cluster = LocalCluster(work, shards=[1, 1])
    cluster.start()
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    try:
        print(f"{args.rows:,} ticker records, {args.rounds} round(s)", flush=True)
        for round_ in range(args.rounds):
            # the order turns each round, so a kind is not always the one after a pause
            for kind in KINDS[round_ % 3 :] + KINDS[: round_ % 3]:
                result = run_round(cluster, kind, round_, args.rows)
                results[kind].append(result)
                print(
                    f"  {kind:11} round {round_ + 1}: {result['rows_per_sec']:>9,.0f} rows/s, "
                    f"client cpu {result['cpu']:.2f}s, servers cpu {result['server_cpu']:.2f}s",
                    flush=True,
                )
    finally:
        cluster.kill()
        shutil.rmtree(work, ignore_errors=True)
    for kind in KINDS:
        runs = results[kind]
        ratios = [
            r["rows_per_sec"] / s["rows_per_sec"]
            for r, s in zip(runs, results["single"], strict=True)
        ]
        print(
            f"{kind:11}: {statistics.median(r['rows_per_sec'] for r in runs):>9,.0f} rows/s "
            f"(client cpu {statistics.median(r['cpu'] for r in runs):.2f}s, servers cpu "
            f"{statistics.median(r['server_cpu'] for r in runs):.2f}s) | vs single "
            f"{statistics.median(ratios):.0%} (rounds: {', '.join(f'{x:.0%}' for x in ratios)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
