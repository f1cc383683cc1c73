"""Kafka throughput through sluice beside confluent-kafka's own loops, in the same run, against a
tansu broker started here (memory storage, loopback).

- produce: sluice ``generator -> kafka`` (idempotent, acks=all, lz4, keyed) beside a plain
  ``Producer.produce`` loop with the same settings, the same 400-byte records and the same keys,
  and beside the same loop writing the very messages the sink writes: also the sink's two headers
  (kind, and the event time, which the generator gives each batch of 500 records), the header
  list made once per such batch as a careful hand-written loop would. Two ratios: against the
  plain loop (the headers cost librdkafka about as much as the rest of a ``produce`` call), and
  against the loop writing the same messages; and sluice again with the sink's
  ``headers: false`` (the plain loop's messages exactly), against the plain loop;
- consume: sluice ``kafka -> file`` beside a plain ``Consumer.consume`` loop appending the values
  to a file, and beside the same loop doing a loader's job (each message's place and headers
  read, its value checked to be a JSON object: every byte from the network is hostile), which
  reads the messages with the sink's headers, as sluice does; the ratio is to that loop (the
  plain one's is printed too). All timed from their first message to their last (the group
  join, which tansu makes wait about half the session timeout, is left out).

Each side reads or writes its own topic; runs alternate and the median rate of each is reported
with the ratio (sluice / library), and the CPU time of this process per produced message (its
own threads and librdkafka's; the broker is another process, so it is left out: steadier than the
rates on a shared machine). ``--produce-only`` skips the consume side.

With ``--lag SECONDS``: the end-to-end lag instead, simulator (2,000 trades/s) -> ``sluice run``
ingest process -> topic -> loader pipeline (this process) -> ClickHouse (chDB), from each ticker's
trade time to the end of the insert that stored it, p50/p99 over every ticker stored in the window.

    python benchmarks/kafka.py [--records 200000] [--repeat 3] [--produce-only]
    python benchmarks/kafka.py --lag 30 [--fetch-wait-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from sluice.config import load_config_text
from sluice.kafka.connection import KIND_HEADER, TIME_HEADER
from sluice.logs import configure_logging
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline
from sluice.sources.generator import encode_synthetic, now_text, payload_for
from sluice.testing.kafka import LocalTansu

RECORD_BYTES = 400
PARTITIONS = 4
SESSION_MS = 6000
GENERATOR_BATCH = 500
PRODUCER = {"acks": "all", "enable.idempotence": True, "compression.type": "lz4"}


def records(count: int) -> list[bytes]:
    payload = payload_for(RECORD_BYTES, now_text()[1])
    _, text = now_text()
    return [encode_synthetic(seq, text, payload) for seq in range(count)]


def library_produce(
    broker: str, topic: str, values: list[bytes], *, headers: bool = False
) -> tuple[float, float]:
    """The plain loop; with ``headers``, each message also carries the two headers the sink
    writes for a generator's record (kind, and the event time of its batch of
    ``GENERATOR_BATCH``), the same bytes. Seconds elapsed and CPU seconds of this process."""
    producer = Producer({"bootstrap.servers": broker, **PRODUCER})
    started, cpu = time.perf_counter(), time.process_time()
    extra = None
    for seq, value in enumerate(values):
        if headers and seq % GENERATOR_BATCH == 0:
            extra = [(KIND_HEADER, b"record"), (TIME_HEADER, repr(time.time()).encode())]
        while True:
            try:
                producer.produce(topic, value, str(seq).encode(), headers=extra)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    return time.perf_counter() - started, time.process_time() - cpu


def sluice_produce(
    broker: str, topic: str, count: int, root: Path, *, headers: bool = True
) -> tuple[float, float]:
    registry = Registry.from_entry_points()
    config = load_config_text(
        f"""
data_dir: {root / "produce"}
admin: {{enabled: false}}
sources:
  gen: {{type: generator, count: {count}, record_bytes: {RECORD_BYTES}, batch_size: {GENERATOR_BATCH}}}
sinks:
  log: {{type: kafka, inputs: [gen], brokers: ["{broker}"], topic: {topic}, key_field: seq,
         headers: {str(headers).lower()}}}
""",
        registry,
    )
    pipeline = Pipeline.build(config, registry)
    started, cpu = time.perf_counter(), time.process_time()
    result = asyncio.run(pipeline.run())
    assert result.ok, result
    return time.perf_counter() - started, time.process_time() - cpu


def library_consume(broker: str, topic: str, count: int, out: Path, *, job: bool = False) -> float:
    """A ``Consumer.consume`` loop appending the values to a file, committing each batch; with
    ``job``, the loop also does what a loader must with messages from a network: read each
    message's place and headers (kind, event time), check the value is a JSON object (orjson),
    and set aside what is not."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_MS,
        }
    )
    consumer.subscribe([topic])
    seen, first = 0, 0.0
    with out.open("ab") as file:
        while seen < count:
            messages = consumer.consume(10_000, 0.2)
            if messages and not first:
                first = time.perf_counter()
            if job:
                kept, bad, places = [], [], {}
                for m in messages:
                    if m.error() is not None:
                        continue
                    value = m.value()
                    kind, when = None, None
                    places[m.topic(), m.partition()] = m.offset() + 1
                    for name, header in m.headers() or ():
                        if name == KIND_HEADER:
                            kind = header
                        elif name == TIME_HEADER:
                            when = float(header)
                    try:
                        ok = type(orjson.loads(value)) is dict
                    except orjson.JSONDecodeError:
                        ok = False
                    (kept if ok and kind and when else bad).append(value)
                assert not bad
                file.write(b"".join(v + b"\n" for v in kept))
            else:
                file.write(b"".join((m.value() or b"") + b"\n" for m in messages))
            seen += sum(1 for m in messages if m.error() is None)
            if messages:
                consumer.commit(message=messages[-1], asynchronous=False)
    elapsed = time.perf_counter() - first
    consumer.close()
    return elapsed


async def _sluice_consume(broker: str, topic: str, count: int, root: Path) -> float:
    registry = Registry.from_entry_points()
    config = load_config_text(
        f"""
data_dir: {root / "consume"}
admin: {{enabled: true, listen: "127.0.0.1:0"}}
sources:
  log:
    type: kafka
    brokers: ["{broker}"]
    topics: [{topic}]
    group: {uuid.uuid4().hex}
    session_timeout_secs: {SESSION_MS / 1000}
sinks:
  out: {{type: file, inputs: [log], path: "{root / "consumed.jsonl"}"}}
""",
        registry,
    )
    pipeline = Pipeline.build(config, registry)
    [source] = pipeline.sources
    sink = pipeline.sink("out")
    assert sink is not None
    task = asyncio.create_task(pipeline.run())
    # the two counters read directly (prometheus_client's child ``_value``), not through
    # totals(): each sample read there collects the whole registry (the process collector reads
    # /proc), which every 5 ms cost this side ~20 % of its time
    source_sent, sink_sent = source.ctx.metrics.sent_events, sink.metrics.sent_events
    first = 0.0
    while not first:
        if source_sent._value.get() > 0:
            first = time.perf_counter()
        assert not task.done(), task.result()
        await asyncio.sleep(0.005)
    while sink_sent._value.get() < count:
        assert not task.done(), task.result()
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - first
    pipeline.stop("done")
    await task
    return elapsed


def measure_lag(seconds: float, trades_per_sec: int, fetch_wait_ms: int | None = None) -> None:
    import os
    import signal
    import subprocess
    import sys

    from sluice.testing.doubles import free_port

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = LocalTansu(root / "tansu")
        broker.start()
        ingest: subprocess.Popen[bytes] | None = None
        try:
            broker.create_topic("ticks", PARTITIONS)
            config = root / "ingest.yaml"
            config.write_text(
                f"""
data_dir: {root / "ingest"}
admin: {{listen: "127.0.0.1:{free_port()}"}}
log: {{level: warning}}
sources:
  coinbase:
    type: coinbase
    products: [BTC-USD, ETH-USD, SOL-USD, DOGE-USD]
    channels: [ticker]
    simulator: {{mode: synthetic, trades_per_sec: {trades_per_sec}}}
sinks:
  log: {{type: kafka, inputs: [coinbase.ticker], brokers: ["{broker.bootstrap}"], topic: ticks,
         batch: {{max_events: 10000, max_age_secs: 0.05}}}}
"""
            )
            ingest = subprocess.Popen(
                [sys.executable, "-m", "sluice", "run", str(config)], env=dict(os.environ)
            )
            lags = asyncio.run(_load_with_lag(broker.bootstrap, root, seconds, fetch_wait_ms))
        finally:
            if ingest is not None:
                ingest.send_signal(signal.SIGTERM)
                ingest.wait(60)
            broker.kill()
    lags.sort()
    p50, p99 = lags[len(lags) // 2], lags[int(len(lags) * 0.99)]
    print(
        f"end-to-end lag, {trades_per_sec} trades/s, {len(lags):,} tickers stored in {seconds:.0f} s:"
        f" p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )


async def _load_with_lag(
    broker: str, root: Path, seconds: float, fetch_wait_ms: int | None
) -> list[float]:
    registry = Registry.from_entry_points()
    # librdkafka's own default (500 ms) unless asked: see docs/scaling.md, "Latency of a fetch"
    passthrough = (
        "" if fetch_wait_ms is None else f", librdkafka: {{fetch.wait.max.ms: {fetch_wait_ms}}}"
    )
    config = load_config_text(
        f"""
data_dir: {root / "loader"}
admin: {{enabled: false}}
sources:
  log: {{type: kafka, brokers: ["{broker}"], topics: [ticks], group: loaders,
         session_timeout_secs: {SESSION_MS / 1000}{passthrough}}}
sinks:
  clickhouse:
    type: clickhouse
    inputs: [log]
    path: {root / "chdb"}
    database: lag
    table: ticks
    batch: {{max_events: 50000, max_age_secs: 0.2}}
""",
        registry,
    )
    pipeline = Pipeline.build(config, registry)
    worker = pipeline.sink("clickhouse")
    assert worker is not None
    sink = worker.sink
    write = sink.write_batch
    lags: list[float] = []
    measuring = False

    async def timed(records: Any, batch: Any = None) -> None:
        await write(records, batch=batch)
        if measuring:
            now = time.time()
            lags.extend(now - r.time for r in records if r.time is not None)

    sink.write_batch = timed  # type: ignore[method-assign]
    task = asyncio.create_task(pipeline.run())
    while worker.metrics.totals()["sent"] == 0:  # the group join and the first insert
        assert not task.done(), task.result()
        await asyncio.sleep(0.05)
    measuring = True
    await asyncio.sleep(seconds)
    measuring = False
    pipeline.stop("done")
    await task
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lag", type=float, help="measure the end-to-end lag for this long")
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        help="the lag run's loader: librdkafka's fetch.wait.max.ms (default: its own, 500)",
    )
    parser.add_argument("--produce-only", action="store_true", help="skip the consume side")
    parser.add_argument("--trades-per-sec", type=int, default=2000)
    args = parser.parse_args()
    configure_logging("warning")
    if args.lag:
        measure_lag(args.lag, args.trades_per_sec, args.fetch_wait_ms)
        return
    count = args.records
    values = records(count)
    rates: dict[str, list[float]] = {
        k: [] for k in ("lib_p", "lib_h", "slu_p", "slu_b", "lib_c", "lib_j", "slu_c")
    }
    cpu: dict[str, list[float]] = {k: [] for k in ("lib_p", "lib_h", "slu_p", "slu_b")}
    ratios: list[float] = []
    same: list[float] = []
    bare: list[float] = []
    consumed: list[float] = []

    def produced(key: str, elapsed_and_cpu: tuple[float, float]) -> None:
        elapsed, seconds = elapsed_and_cpu
        rates[key].append(count / elapsed)
        cpu[key].append(seconds / count * 1e6)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = LocalTansu(root / "tansu")
        broker.start()
        try:
            for round_ in range(args.repeat):
                work = root / f"round{round_}"
                work.mkdir()
                lib_topic, slu_topic = f"lib{round_}", f"slu{round_}"
                broker.create_topic(lib_topic, PARTITIONS)
                broker.create_topic(slu_topic, PARTITIONS)
                produced("lib_p", library_produce(broker.bootstrap, lib_topic, values))
                broker.create_topic(f"hdr{round_}", PARTITIONS)
                produced(
                    "lib_h",
                    library_produce(broker.bootstrap, f"hdr{round_}", values, headers=True),
                )
                produced("slu_p", sluice_produce(broker.bootstrap, slu_topic, count, work))
                ratios.append(rates["slu_p"][-1] / rates["lib_p"][-1])
                same.append(rates["slu_p"][-1] / rates["lib_h"][-1])
                broker.create_topic(f"bare{round_}", PARTITIONS)
                produced(
                    "slu_b",
                    sluice_produce(
                        broker.bootstrap, f"bare{round_}", count, work / "bare", headers=False
                    ),
                )
                bare.append(rates["slu_b"][-1] / rates["lib_p"][-1])
                if args.produce_only:
                    continue
                # the plain loop reads the plain messages; the loop doing the same job and
                # sluice read the messages with the sink's headers, as a loader behind a sluice
                # ingester does
                hdr = f"hdr{round_}"
                rates["lib_c"].append(
                    count / library_consume(broker.bootstrap, lib_topic, count, work / "lib.jsonl")
                )
                rates["lib_j"].append(
                    count
                    / library_consume(broker.bootstrap, hdr, count, work / "job.jsonl", job=True)
                )
                rates["slu_c"].append(
                    count / asyncio.run(_sluice_consume(broker.bootstrap, hdr, count, work))
                )
                consumed.append(rates["slu_c"][-1] / rates["lib_j"][-1])
        finally:
            broker.kill()
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    us = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"records per run: {count:,} ({RECORD_BYTES} bytes), {args.repeat} runs, medians")
    print(
        f"produce  confluent-kafka loop  {med['lib_p']:>10,.0f} msg/s   cpu {us['lib_p']:.2f} us/msg"
    )
    print(
        f"produce  same, sink's headers  {med['lib_h']:>10,.0f} msg/s   cpu {us['lib_h']:.2f} us/msg"
    )
    print(
        f"produce  sluice gen -> kafka   {med['slu_p']:>10,.0f} msg/s   cpu {us['slu_p']:.2f} us/msg"
        f"   ratio {med['slu_p'] / med['lib_p']:.2f} (same messages {med['slu_p'] / med['lib_h']:.2f})"
    )
    print(
        f"produce  same, headers: false  {med['slu_b']:>10,.0f} msg/s   cpu {us['slu_b']:.2f} us/msg"
        f"   ratio {med['slu_b'] / med['lib_p']:.2f} (to the plain loop: the same messages)"
    )
    print(
        "produce  ratios per run: to the plain loop "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + "; to the same messages "
        + ", ".join(f"{r:.2f}" for r in same)
        + "; headers: false to the plain loop "
        + ", ".join(f"{r:.2f}" for r in bare)
    )
    print(
        f"produce  cpu ratios (loop / sluice): plain {us['lib_p'] / us['slu_p']:.2f},"
        f" same messages {us['lib_h'] / us['slu_p']:.2f},"
        f" headers: false to the plain loop {us['lib_p'] / us['slu_b']:.2f}"
    )
    if args.produce_only:
        return
    print(f"consume  confluent-kafka loop  {med['lib_c']:>10,.0f} msg/s")
    print(f"consume  same, the loader's job {med['lib_j']:>9,.0f} msg/s")
    print(
        f"consume  sluice kafka -> file  {med['slu_c']:>10,.0f} msg/s   ratio"
        f" {med['slu_c'] / med['lib_j']:.2f} to the same job ({med['slu_c'] / med['lib_c']:.2f}"
        " to the plain loop); per run " + ", ".join(f"{r:.2f}" for r in consumed)
    )


if __name__ == "__main__":
    main()
