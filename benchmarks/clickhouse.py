"""ClickHouse sink benchmark: 1M Coinbase-like ticker records into a server and into chDB.

For each target, two kinds of run, each in its own subprocess, alternated, ``--rounds`` times:

- ``plain``: the same rows with the same client and no pipeline: the records' JSON joined into
  50,000-row JSONEachRow bodies, POSTed with aiohttp (server) or streamed with chDB's
  ``send_insert`` in 1 MiB appends (embedded), with the settings the sink uses;
- ``sink``: a real pipeline (``Pipeline.build`` + ``run``) with a source that yields the same
  records in batches of 5,000, into the ``clickhouse`` sink with its default batching (50,000).

Printed per run: rows/s, the client process's CPU seconds (user+sys) and peak RSS, and for the
server the server process's CPU seconds; then the medians and the ratio sink/plain. Records are
made before the clock starts, in both kinds of run. Usage::

    python benchmarks/clickhouse.py [--rows 1000000] [--rounds 3] [--target server|chdb|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BATCH = 50_000
CHUNK_BYTES = 1 << 20


def make_records(count: int) -> list[bytes]:
    from sluice.sinks.clickhouse.testing import ticker_bytes

    return [ticker_bytes(n) for n in range(count)]


def usage() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": own.ru_utime + own.ru_stime, "rss_mb": own.ru_maxrss / 1024}


# -- the child runs -----------------------------------------------------------------------------


async def plain_server(url: str, table: str, rows: list[bytes]) -> None:
    import aiohttp

    params = {
        "query": f"INSERT INTO {table} FORMAT JSONEachRow",
        "date_time_input_format": "best_effort",
        "input_format_skip_unknown_fields": "1",
    }
    async with aiohttp.ClientSession() as session:
        for first in range(0, len(rows), BATCH):
            body = b"\n".join(rows[first : first + BATCH]) + b"\n"
            async with session.post(url + "/", params=params, data=body) as answer:
                text = await answer.read()
                if answer.status != 200:
                    raise RuntimeError(text.decode())


def plain_chdb(path: str, table: str, rows: list[bytes]) -> None:
    from chdb import state

    connection = state.connect(path)
    statement = (
        f"INSERT INTO {table} SETTINGS date_time_input_format='best_effort', "
        "input_format_skip_unknown_fields=1"
    )
    for first in range(0, len(rows), BATCH):
        body = b"\n".join(rows[first : first + BATCH]) + b"\n"
        inserter = connection.send_insert(statement, "JSONEachRow")
        for start in range(0, len(body), CHUNK_BYTES):  # chunks parse faster than one append
            inserter.append(body[start : start + CHUNK_BYTES])
        inserter.finish()
    connection.close()


async def through_sink(target: str, table: str, records: Sequence[Any]) -> None:
    from sluice.config.loader import load_config_text
    from sluice.logs import configure_logging
    from sluice.runtime.pipeline import Pipeline
    from sluice.testing import ListSource, registry_with_doubles

    configure_logging("warning")
    registry = registry_with_doubles()
    database, name = table.split(".")
    where = f"url: {target}" if target.startswith("http") else f"path: {target}"
    config = load_config_text(
        f"""
admin: {{enabled: false}}
data_dir: {tempfile.mkdtemp(prefix="sluice-bench-")}
sources: {{t: {{type: list, batch_size: 5000}}}}
sinks:
  ch: {{type: clickhouse, inputs: [t], {where}, database: {database}, table: {name}}}
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


def child(args: argparse.Namespace) -> None:
    rows = make_records(args.rows)
    if args.kind == "sink":
        from sluice.records import Record

        # made before the clock starts, like the plain run's rows
        records = [Record(raw, "ticker") for raw in rows]
    before = usage()
    started = time.perf_counter()
    if args.kind == "plain" and args.target_url.startswith("http"):
        asyncio.run(plain_server(args.target_url, args.table, rows))
    elif args.kind == "plain":
        plain_chdb(args.target_url, args.table, rows)
    else:
        asyncio.run(through_sink(args.target_url, args.table, records))
    elapsed = time.perf_counter() - started
    after = usage()
    print(
        json.dumps(
            {
                "rows": len(rows),
                "secs": elapsed,
                "cpu": after["cpu"] - before["cpu"],
                "rss_mb": after["rss_mb"],
            }
        )
    )


# -- the parent ---------------------------------------------------------------------------------


def run_child(kind: str, target: str, table: str, rows: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--target-url", target, "--table", table]
    command += ["--rows", str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepare_table(store: Any, table: str) -> None:
    """The shipped ticker table, made as the sink makes it (the legacy DDL on 18.16)."""
    database, name = table.split(".")
    store.create_ticker_table(database, name)


def chdb_store(path: str) -> Any:
    from sluice.sinks.clickhouse.testing import LocalChdb

    return LocalChdb(Path(path))


def count_rows(target: str, table: str, server: Any) -> int:
    store = server if server is not None else chdb_store(target)
    try:
        [[counted]] = store.rows(f"SELECT count() FROM {table}")
    finally:
        if server is None:
            store.close()  # the next child process opens the directory
    return int(counted)


def bench_target(target_kind: str, rows: int, rounds: int, work: Path) -> dict[str, Any]:
    from sluice.sinks.clickhouse.testing import LocalServer

    server = None
    if target_kind == "server":
        server = LocalServer(work / "server")
        server.start()
    results: dict[str, list[dict[str, Any]]] = {"plain": [], "sink": []}
    try:
        for round_ in range(rounds):
            for kind in ("plain", "sink"):
                table = f"bench.{kind}_{round_}"
                if server is not None:
                    target = server.url
                    server.query("CREATE DATABASE IF NOT EXISTS bench")
                    if kind == "plain":
                        prepare_table(server, table)
                else:
                    target = str(work / f"chdb_{kind}_{round_}")
                    if kind == "plain":
                        store = chdb_store(target)
                        try:
                            prepare_table(store, table)
                        finally:
                            store.close()
                server_cpu = process_cpu(server.process.pid) if server and server.process else 0.0
                result = run_child(kind, target, table, rows)
                if server is not None and server.process is not None:
                    result["server_cpu"] = process_cpu(server.process.pid) - server_cpu
                result["stored"] = count_rows(target, table, server)
                result["rows_per_sec"] = result["rows"] / result["secs"]
                results[kind].append(result)
                extra = (
                    f", server cpu {result['server_cpu']:.2f}s" if "server_cpu" in result else ""
                )
                print(
                    f"  {target_kind:6} {kind:5} round {round_ + 1}: {result['rows_per_sec']:>9,.0f} rows/s, "
                    f"client cpu {result['cpu']:.2f}s{extra}, peak RSS {result['rss_mb']:.0f} MB, "
                    f"stored {result['stored']:,}",
                    flush=True,
                )
                if result["stored"] != rows:
                    raise RuntimeError(f"{kind}: stored {result['stored']} of {rows} rows")
    finally:
        if server is not None:
            server.kill()
    summary = {
        kind: {
            "rows_per_sec": statistics.median(r["rows_per_sec"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs),
            "rss_mb": statistics.median(r["rss_mb"] for r in runs),
            "server_cpu": statistics.median(r.get("server_cpu", 0.0) for r in runs),
        }
        for kind, runs in results.items()
    }
    # each round's sink run against the plain run beside it, so drifting load cancels out
    summary["ratio"] = statistics.median(
        s["rows_per_sec"] / p["rows_per_sec"]
        for p, s in zip(results["plain"], results["sink"], strict=True)
    )
    summary["ratios"] = [
        s["rows_per_sec"] / p["rows_per_sec"]
        for p, s in zip(results["plain"], results["sink"], strict=True)
    ]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", choices=["server", "chdb", "both"], default="both")
    parser.add_argument("--child", choices=["plain", "sink"], help=argparse.SUPPRESS)
    parser.add_argument("--target-url", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.kind = args.child
        child(args)
        return
    targets = ["server", "chdb"] if args.target == "both" else [args.target]
    work = Path(tempfile.mkdtemp(prefix="sluice-ch-bench-"))
    try:
        print(f"{args.rows:,} ticker records, {args.rounds} round(s), medians below", flush=True)
        for target in targets:
            summary = bench_target(target, args.rows, args.rounds, work)
            plain, sink = summary["plain"], summary["sink"]
            print(
                f"{target}: plain {plain['rows_per_sec']:,.0f} rows/s (cpu {plain['cpu']:.2f}s, "
                f"RSS {plain['rss_mb']:.0f} MB) | sink {sink['rows_per_sec']:,.0f} rows/s "
                f"(cpu {sink['cpu']:.2f}s, RSS {sink['rss_mb']:.0f} MB) | "
                f"ratio {summary['ratio']:.0%} (median of rounds: "
                f"{', '.join(f'{r:.0%}' for r in summary['ratios'])})",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
