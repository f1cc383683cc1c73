"""NATS JetStream benchmark: the ``nats`` sink and source beside nats-py's own loops, same run.

Starts a three-node JetStream cluster on loopback (``sluice.testing.nats``), then, ``--rounds``
times, alternated, each on a fresh stream with 3 replicas:

- ``publish/client``: nats-py's ``publish_async`` of the generator's records (the same bytes, a
  ``Nats-Msg-Id`` each), awaiting every acknowledgement per 2,000 (the sink's batch);
- ``publish/sluice``: a pipeline ``generator`` -> ``nats`` sink;
- ``consume/client``: a durable pull consumer, fetch 500, ack each message, until all are read;
- ``consume/sluice``: a pipeline ``nats`` source -> ``file`` sink, until every record is written.

Printed: records/s per run, the medians and the ratios sluice/client. Then, with ``--lag-secs``,
the end-to-end lag: a pipeline simulator (synthetic, ``--lag-rate`` trades/s) -> coinbase ->
``nats`` sink, and a second pipeline (a subprocess) ``nats`` -> ``clickhouse`` (chDB) with a table
that stamps each row's insert time (``DEFAULT now64(6)``); the lag of a row is its insert time
minus its trade time, p50/p99 over the rows. Usage::

    python benchmarks/nats.py [--records 50000] [--rounds 3] [--lag-secs 30] [--lag-rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

# run as a script, this file's directory comes first on sys.path, and this file is named like the
# nats-py package it benchmarks: take the directory off so `import nats` finds the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import yaml  # noqa: E402

from sluice.testing.nats import LocalNatsCluster  # noqa: E402

BATCH = 2000


def records(count: int) -> list[bytes]:
    from sluice.sources.generator import encode_synthetic, now_text, payload_for

    _, text = now_text()
    payload = payload_for(400, text)
    return [encode_synthetic(n, text, payload) for n in range(count)]


async def publish_client(
    urls: list[str], stream: str, rows: list[bytes], yield_every: int = 0
) -> float:
    """nats-py's loop; with ``yield_every``, a turn to the event loop every so many publishes
    (what the sink does), so the batch is sent while it is being made."""
    import nats

    await create_stream(urls, stream)
    started = time.perf_counter()  # connecting is timed, as in the sluice run
    nc = await nats.connect(urls)
    js = nc.jetstream(publish_async_max_pending=4000)
    for start in range(0, len(rows), BATCH):
        futures = []
        for n in range(start, min(start + BATCH, len(rows))):
            futures.append(
                await js.publish_async(
                    f"{stream}.gen", rows[n], stream=stream, headers={"Nats-Msg-Id": str(n)}
                )
            )
            if yield_every and n % yield_every == yield_every - 1:
                await asyncio.sleep(0)
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await nc.close()
    return len(rows) / elapsed


async def create_stream(urls: list[str], stream: str) -> None:
    """The stream, before the clock starts (for both kinds of run)."""
    import nats

    nc = await nats.connect(urls)
    await nc.jetstream().add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=3)
    await nc.close()


def run_pipeline_config(config: dict[str, Any], until: Any = None) -> float:
    from sluice.config.loader import load_config_text
    from sluice.registry import Registry
    from sluice.runtime.pipeline import Pipeline

    registry = Registry.from_entry_points()
    pipeline = Pipeline.build(load_config_text(yaml.safe_dump(config), registry), registry)

    async def go() -> float:
        started = time.perf_counter()
        task = asyncio.create_task(pipeline.run())
        if until is not None:
            while not until(pipeline):
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            pipeline.stop("benchmark done")
            await task
            return elapsed
        result = await task
        assert result.ok
        return time.perf_counter() - started

    return asyncio.run(go())


def sent(pipeline: Any, component: str) -> int:
    """What sink ``component`` has written, read from its own counter (prometheus_client's child
    ``_value``), not through ``registry.collect()``: that collects the whole registry (the process
    collector reads /proc), which polled every 10 ms cost the measured side a share of its time
    (~20 % in the Kafka benchmark)."""
    worker = pipeline.sink(component)
    assert worker is not None, component
    return int(worker.metrics.sent_events._value.get())


def publish_sluice(urls: list[str], stream: str, count: int, tmp: Path) -> float:
    config = {
        "data_dir": str(tmp / stream),
        "admin": {"enabled": False},
        "log": {"level": "warning"},
        "sources": {"gen": {"type": "generator", "count": count, "batch_size": 500}},
        "sinks": {
            "log": {
                "type": "nats",
                "inputs": ["gen"],
                "servers": urls,
                "stream": stream,
                "subject": f"{stream}.gen",
            }
        },
    }
    asyncio.run(create_stream(urls, stream))
    return count / run_pipeline_config(config)


async def consume_client(urls: list[str], stream: str, count: int) -> float:
    import nats

    started = time.perf_counter()  # connecting is timed, as in the sluice run
    nc = await nats.connect(urls)
    js = nc.jetstream()
    subscription = await js.pull_subscribe(f"{stream}.>", durable="client", stream=stream)
    read = 0
    while read < count:
        try:
            messages = await subscription.fetch(500, timeout=1)
        except nats.errors.TimeoutError:
            continue
        for message in messages:
            await message.ack()
        read += len(messages)
    elapsed = time.perf_counter() - started
    await nc.close()
    return count / elapsed


def consume_sluice(urls: list[str], stream: str, count: int, tmp: Path) -> float:
    config = {
        "data_dir": str(tmp / f"{stream}-consume"),
        "admin": {"enabled": False},
        "log": {"level": "warning"},
        "sources": {
            "log": {"type": "nats", "servers": urls, "stream": stream, "durable": "sluice"}
        },
        "sinks": {"out": {"type": "file", "inputs": ["log"], "path": str(tmp / f"{stream}.jsonl")}},
    }
    return count / run_pipeline_config(config, until=lambda p: sent(p, "out") >= count)


LAG_DDL = """\
CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.{table}
(
    time       DateTime64(6, 'UTC'),
    product_id LowCardinality(String),
    trade_id   UInt64,
    inserted   DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY (product_id, trade_id);
"""


def lag(
    urls: list[str], tmp: Path, seconds: float, rate: int, replicas: int = 3
) -> tuple[float, float, int]:
    stream = f"LAG{uuid.uuid4().hex[:8]}"
    (tmp / "lag.sql").write_text(LAG_DDL)
    loader = {
        "data_dir": str(tmp / "lag-loader"),
        "admin": {"enabled": False},
        "log": {"level": "warning"},
        "sources": {
            "log": {
                "type": "nats",
                "servers": urls,
                "stream": stream,
                "durable": "lag",
                "fetch_timeout_secs": 0.2,
            }
        },
        "sinks": {
            "ch": {
                "type": "clickhouse",
                "inputs": ["log.ticker"],
                "path": str(tmp / "lag-chdb"),
                "database": "d",
                "table": "t",
                "ddl": str(tmp / "lag.sql"),
                "batch": {"max_events": 50000, "max_age_secs": 0.2},
            }
        },
    }
    ingest = {
        "data_dir": str(tmp / "lag-ingest"),
        "admin": {"enabled": False},
        "log": {"level": "warning"},
        "sources": {
            "coinbase": {
                "type": "coinbase",
                "products": ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD"],
                "channels": ["ticker"],
                "simulator": {"mode": "synthetic", "trades_per_sec": rate},
            }
        },
        "sinks": {
            "log": {
                "type": "nats",
                "inputs": ["coinbase.ticker"],
                "servers": urls,
                "stream": stream,
                "subject": f"{stream}.{{product_id}}",
                "msg_id": ["product_id", "trade_id"],
                "create_stream": {"replicas": replicas},
                "batch": {"max_events": 2000, "max_age_secs": 0.05},
            }
        },
    }
    (tmp / "loader.yaml").write_text(yaml.safe_dump(loader))
    started = time.monotonic()
    run_pipeline_config(ingest, until=lambda p: time.monotonic() - started > 2)  # the stream
    process = subprocess.Popen([sys.executable, "-m", "sluice", "run", str(tmp / "loader.yaml")])
    time.sleep(3)  # the loader's start (chDB) before the measured window
    started, window_start = time.monotonic(), time.time()
    run_pipeline_config(ingest, until=lambda p: time.monotonic() - started > seconds)
    time.sleep(3)
    process.terminate()
    process.wait(60)
    from sluice.sinks.clickhouse.testing import LocalChdb

    store = LocalChdb(tmp / "lag-chdb")
    try:
        # the measured window only: trades made after the loader had started
        [[p50, p99, rows]] = store.rows(
            "SELECT quantileExact(0.5)(l), quantileExact(0.99)(l), count() FROM "
            "(SELECT (toUnixTimestamp64Micro(inserted) - toUnixTimestamp64Micro(time)) / 1e6 AS l"
            f" FROM d.t WHERE toUnixTimestamp64Micro(time) > {int(window_start * 1e6)})"
        )
        # steady or growing: the median lag of each 5 s of trade time
        steps = store.rows(
            "SELECT intDiv(toUnixTimestamp64Micro(time) - "
            f"{int(window_start * 1e6)}, 5000000) AS s, "
            "quantileExact(0.5)((toUnixTimestamp64Micro(inserted) - "
            "toUnixTimestamp64Micro(time)) / 1e6), count() FROM d.t WHERE "
            f"toUnixTimestamp64Micro(time) > {int(window_start * 1e6)} GROUP BY s ORDER BY s"
        )
    finally:
        store.close()
    print(
        "lag p50 per 5 s of the window: "
        + ", ".join(f"{float(p) * 1000:.0f} ms ({int(n)} rows)" for _, p, n in steps)
    )
    return float(p50), float(p99), int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lag-secs", type=float, default=0)
    parser.add_argument("--lag-rate", type=int, default=2000)
    parser.add_argument("--publish-only", action="store_true", help="skip the consume runs")
    parser.add_argument(
        "--pipelined-client",
        action="store_true",
        help="also nats-py's loop with a turn to the event loop every 200 publishes",
    )
    parser.add_argument(
        "--lag-replicas", type=int, default=3, help="the lag run's stream replicas (1 or 3)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        cluster = LocalNatsCluster(tmp / "nats")
        cluster.start()
        try:
            rows = records(args.records)
            results: dict[str, list[float]] = {}
            urls, count = cluster.urls, args.records
            for round_ in range(args.rounds):
                a, b = f"C{round_}{uuid.uuid4().hex[:6]}", f"P{round_}{uuid.uuid4().hex[:6]}"
                runs = {
                    "publish/client": lambda a=a: asyncio.run(publish_client(urls, a, rows)),
                    "publish/sluice": lambda b=b: publish_sluice(urls, b, count, tmp),
                    "consume/client": lambda a=a: asyncio.run(consume_client(urls, a, count)),
                    "consume/sluice": lambda b=b: consume_sluice(urls, b, count, tmp),
                }
                order = list(runs) if round_ % 2 == 0 else [*list(runs)[1::-1], *list(runs)[:1:-1]]
                if args.pipelined_client:
                    y = f"Y{round_}{uuid.uuid4().hex[:6]}"
                    runs["publish/client-yield"] = lambda y=y: asyncio.run(
                        publish_client(urls, y, rows, yield_every=200)
                    )
                    order.insert(round_ % 2, "publish/client-yield")
                if args.publish_only:
                    order = [name for name in order if name.startswith("publish/")]
                for name in order:
                    value = runs[name]()
                    results.setdefault(name, []).append(value)
                    print(f"round {round_ + 1} {name}: {value:,.0f} records/s", flush=True)
            medians = {name: statistics.median(values) for name, values in results.items()}
            for name, value in medians.items():
                print(f"median {name}: {value:,.0f} records/s")
            for what in ("publish", "consume") if medians else ():
                if f"{what}/sluice" not in medians:
                    continue
                ratio = medians[f"{what}/sluice"] / medians[f"{what}/client"]
                print(f"ratio {what} sluice/client: {ratio:.2f}")
            if "publish/client-yield" in medians:
                ratio = medians["publish/sluice"] / medians["publish/client-yield"]
                print(f"ratio publish sluice/client-yield: {ratio:.2f}")
            if args.lag_secs:
                p50, p99, count = lag(
                    cluster.urls, tmp, args.lag_secs, args.lag_rate, args.lag_replicas
                )
                print(
                    f"lag simulator -> nats -> chDB at {args.lag_rate}/s: p50 {p50 * 1000:.0f} ms,"
                    f" p99 {p99 * 1000:.0f} ms over {count} rows"
                )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
