"""The ``nats`` sink and source against a real three-node NATS JetStream cluster on loopback
(Debian's nats-server): every record once through the stream, loaders sharing a durable consumer,
a loader killed with SIGKILL, the stream's leader killed, a message that is not JSON, servers that
cannot be reached."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import nats
import orjson
import pytest
import yaml
from nats.js.api import ConsumerConfig, DeliverPolicy

from sluice.config.loader import load_config
from sluice.records import Record
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline
from sluice.simulator import CoinbaseSimulator
from sluice.sinks.clickhouse.testing import LocalChdb, LocalServer
from sluice.testing import free_port
from sluice.testing.conformance import SinkConformance
from sluice.testing.nats import LocalNatsCluster
from tests.conftest import SLUICE, Spawn, sent_events, wait_for, wait_until
from tests.integration.support import (
    build_pipeline,
    lines_into,
    read_jsonl,
    run_pipeline,
    synthetic,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNatsCluster]:
    """Three JetStream nodes routed to each other, stopped by PID at the end."""
    nodes = LocalNatsCluster(tmp_path_factory.mktemp("nats"))
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture
def stream() -> str:
    """A fresh stream name (and subject prefix) per test."""
    return f"S{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def client(cluster: LocalNatsCluster) -> AsyncIterator[Any]:
    nc = await nats.connect(cluster.urls)
    yield nc
    await nc.close()


def sink_config(cluster: LocalNatsCluster, stream: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "nats",
        "servers": cluster.urls,
        "stream": stream,
        "subject": f"{stream}.{{product_id}}",
        "msg_id": ["product_id", "trade_id"],
        "create_stream": {"replicas": 3},
        **extra,
    }


def source_config(cluster: LocalNatsCluster, stream: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "nats",
        "servers": cluster.urls,
        "stream": stream,
        "durable": "loaders",
        **extra,
    }


SINK_LABELS = {"component_id": "log", "component_kind": "sink", "component_type": "nats"}


def loader_to_file(
    cluster: LocalNatsCluster, stream: str, tmp: Path
) -> tuple[dict[str, Any], Path]:
    """A pipeline config: the ``nats`` source into a JSON Lines file (and that file)."""
    out = tmp / "out.jsonl"
    config = {
        "data_dir": str(tmp / "data"),
        "admin": {"enabled": False},
        "sources": {"log": source_config(cluster, stream)},
        "sinks": {"out": {"type": "file", "path": str(out), "inputs": ["log"]}},
    }
    return config, out


def sent(pipeline: Pipeline, component_id: str, type_: str = "nats") -> int:
    labels = {"component_id": component_id, "component_kind": "sink", "component_type": type_}
    value = pipeline.metrics.registry.get_sample_value("sluice_component_sent_events_total", labels)
    return int(value or 0)


async def read_stream(
    nc: Any, stream: str, at_least: int = 0, headers: list[dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Every message of ``stream``, decoded, in order (an ephemeral consumer of the test's own);
    ``headers``: a list to which each message's headers are appended, in the same order.

    Reads as many as the stream says it holds, and at least ``at_least`` when the test knows how
    many were acknowledged: right after a node was killed and restarted, the stream's state can
    be answered from a replica still catching up (a count of 1,500 of 3,000 acknowledged was seen
    under load), so fetching goes on until the count is reached or 30 s pass without a message;
    what was really lost then shows in the test's own comparison."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    total = max(info.state.messages, at_least)
    subscription = await js.pull_subscribe(
        f"{stream}.>", stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    out: list[dict[str, Any]] = []
    idle = 0
    while len(out) < total and idle < 6:
        try:
            messages = await subscription.fetch(500, timeout=5)
        except nats.errors.TimeoutError:
            idle += 1
            continue
        idle = 0
        for message in messages:
            out.append(orjson.loads(message.data))
            if headers is not None:
                headers.append(dict(message.headers or {}))
            await message.ack()
    await subscription.unsubscribe()
    return out


async def consumer_settled(nc: Any, stream: str, durable: str = "loaders") -> bool:
    """Every message of the stream delivered and acknowledged: the consumer's ack floor is the
    stream's last message.

    ``num_pending == 0`` alone is not enough: in a cluster, the first info of a consumer just
    made reports no pending messages (0, 0) before its leader has counted them (seen on
    nats-server 2.9.10), which once let a test stop its loader before it had read anything.
    While a consumer is being made its info may also go unanswered: a timeout, "not yet"."""
    js = nc.jetstream()
    try:
        info = await js.consumer_info(stream, durable, timeout=2)
    except nats.errors.TimeoutError:
        return False
    last = (await js.stream_info(stream)).state.last_seq
    return bool(
        info.num_pending == 0 and info.num_ack_pending == 0 and info.ack_floor.stream_seq >= last
    )


async def ingest(cluster: LocalNatsCluster, stream: str, tmp: Path, tickers: int) -> None:
    """simulator -> coinbase source -> nats sink, in this process, until ``tickers`` were
    acknowledged by the stream."""
    config = {
        "data_dir": str(tmp / "ingest"),
        "admin": {"enabled": False},
        "sources": {
            "coinbase": {
                "type": "coinbase",
                "products": ["BTC-USD", "ETH-USD"],
                "channels": ["ticker", "heartbeat"],
                "simulator": {"mode": "synthetic", "trades_per_sec": 1000},
            }
        },
        "sinks": {"log": {**sink_config(cluster, stream), "inputs": ["coinbase.ticker"]}},
    }
    pipeline = build_pipeline(config)
    result = await run_pipeline(pipeline, until=lambda: sent(pipeline, "log") >= tickers)
    assert result.ok


def trade_keys(rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(str(row["product_id"]), int(row["trade_id"])) for row in rows}


def write_loader(tmp: Path, name: str, source: dict[str, Any], sink: dict[str, Any]) -> Path:
    port = free_port()
    config = {
        "data_dir": str(tmp / name),
        "admin": {"listen": f"127.0.0.1:{port}"},
        "sources": {"log": source},
        "sinks": {"ch": {**sink, "inputs": ["log.ticker"]}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def admin_url(config: Path) -> str:
    listen = yaml.safe_load(config.read_text())["admin"]["listen"]
    return f"http://{listen}/"


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(60)


async def test_the_sink_stores_each_record_once_in_a_replicated_stream_even_when_sent_twice(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path
) -> None:
    records = [{"product_id": "BTC-USD", "trade_id": n, "price": "1.5"} for n in range(1500)]
    lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
    (tmp_path / "in.jsonl").write_bytes(lines)
    for attempt in range(2):  # the second run publishes the same trades again (an A/B ingester)
        config = {
            "data_dir": str(tmp_path / f"run{attempt}"),
            "admin": {"enabled": False},
            "sources": {"file": {"type": "file", "path": str(tmp_path / "in.jsonl")}},
            "sinks": {"log": {**sink_config(cluster, stream), "inputs": ["file"]}},
        }
        pipeline = build_pipeline(config)
        assert (await run_pipeline(pipeline)).ok
        registry = pipeline.metrics.registry
        acks = registry.get_sample_value("sluice_nats_publish_ack_seconds_count", SINK_LABELS)
        assert acks is not None and acks >= 1
        repeats = registry.get_sample_value(
            "sluice_component_dropped_events_total", {**SINK_LABELS, "reason": "duplicate"}
        )
        assert (repeats or 0) == (1500 if attempt else 0)
    info = await client.jetstream().stream_info(stream)
    assert info.config.num_replicas == 3
    assert info.state.messages == 1500
    stored = await read_stream(client, stream)
    assert [row["trade_id"] for row in stored] == list(range(1500))


async def test_each_message_carries_the_kind_and_time_of_its_own_record(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path
) -> None:
    """The sink makes a message's time header again only when the record's time object changes:
    records sharing one, equal times in distinct objects, aware datetimes (the Coinbase
    source's) and no time each keep their own."""
    moment = datetime(2026, 11, 30, 1, 2, 3, 250000, tzinfo=UTC)
    shared = 1.5
    whens: list[float | datetime | None] = [shared, shared, float("1.5"), 2.25, moment]
    whens += [datetime(2026, 11, 30, 1, 2, 3, 250000, tzinfo=UTC), None, None, 4.0, moment]
    kinds = ["ticker", "ticker", "match", "match", "ticker", "ticker", "status", "gap", "gap", "x"]
    records = [
        Record(orjson.dumps({"product_id": "BTC-USD", "trade_id": n}), kind, when)
        for n, (kind, when) in enumerate(zip(kinds, whens, strict=True))
    ]
    config = {
        "data_dir": str(tmp_path / "data"),
        "admin": {"enabled": False},
        "sources": {"src": {"type": "list"}},
        "sinks": {"log": {**sink_config(cluster, stream), "inputs": ["src"]}},
    }
    assert (await run_pipeline(build_pipeline(config, records))).ok
    headers: list[dict[str, str]] = []
    stored = await read_stream(client, stream, at_least=len(records), headers=headers)
    assert [row["trade_id"] for row in stored] == list(range(len(records)))
    times: list[str | None] = ["1.5", "1.5", "1.5", "2.25", repr(moment.timestamp())]
    times += [repr(moment.timestamp())]
    times += [None, None, "4.0", repr(moment.timestamp())]
    assert [(h["Sluice-Kind"], h.get("Sluice-Time")) for h in headers] == list(
        zip(kinds, times, strict=True)
    )


async def test_records_without_a_subject_mid_batch_go_to_the_dead_letters_and_the_rest_is_stored(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path
) -> None:
    # one batch of 700 records: the sink gives the loop turns while publishing it
    records: list[dict[str, Any]] = [
        {"product_id": "BTC-USD", "trade_id": n, "price": "1.5"} for n in range(700)
    ]
    del records[250]["product_id"]
    records[450]["product_id"] = "A.B"
    lines = [orjson.dumps(r) for r in records]
    # JSON a source takes (orjson reads 1,024 levels) whose message id Python cannot make text
    lines[600] = b'{"product_id": "BTC-USD", "trade_id": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    config = lines_into(
        tmp_path,
        lines,
        {**sink_config(cluster, stream), "batch": {"max_events": 700, "max_age_secs": 5}},
    )
    assert (await run_pipeline(build_pipeline(config))).ok
    stored = await read_stream(client, stream)
    assert [row["trade_id"] for row in stored] == [
        n for n in range(700) if n not in (250, 450, 600)
    ]
    letters = read_jsonl(tmp_path / "data/dead_letters.jsonl")
    assert [letter["record"]["trade_id"] for letter in letters[:2]] == [250, 450]
    assert "'product_id' is missing" in letters[0]["reason"]
    assert "is not a subject token" in letters[1]["reason"]
    assert len(letters) == 3
    assert "'trade_id' of the message id is nested too deep" in letters[2]["reason"]


async def test_simulator_to_nats_then_a_second_process_loads_every_ticker_once_into_chdb(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path, spawn: Spawn
) -> None:
    await ingest(cluster, stream, tmp_path, 600)
    published = await read_stream(client, stream)
    assert len(published) >= 600
    assert len(trade_keys(published)) == len(published)
    chdb_dir = tmp_path / "chdb"
    config = write_loader(
        tmp_path,
        "loader",
        source_config(cluster, stream),
        {"type": "clickhouse", "path": str(chdb_dir), "database": "d", "table": "t"},
    )
    loader = spawn([*SLUICE, "run", str(config)])
    await wait_until(lambda: consumer_exists_and_settled(client, stream), timeout=60)
    assert stop(loader) == 0
    store = LocalChdb(chdb_dir)
    try:
        rows = store.rows("SELECT product_id, trade_id FROM d.t")
    finally:
        store.close()
    assert len(rows) == len(published)
    assert {(p, int(t)) for p, t in rows} == trade_keys(published)


async def consumer_exists_and_settled(nc: Any, stream: str) -> bool:
    try:
        return await consumer_settled(nc, stream)
    except nats.js.errors.NotFoundError:
        return False


@pytest.mark.clickhouse_server
async def test_two_loaders_share_the_consumer_and_a_loader_killed_mid_run_loses_nothing(
    cluster: LocalNatsCluster,
    stream: str,
    client: Any,
    tmp_path: Path,
    spawn: Spawn,
    clickhouse_server: LocalServer,
    table: str,
) -> None:
    await ingest(cluster, stream, tmp_path, 3000)
    published = trade_keys(await read_stream(client, stream))
    source = source_config(
        cluster,
        stream,
        batch_size=50,
        ack_wait_secs=2,
        rate_limit={"events_per_sec": 300},
    )
    sink = {
        "type": "clickhouse",
        "url": clickhouse_server.url,
        "database": "default",
        "table": table,
        "batch": {"max_events": 100, "max_age_secs": 0.1},
    }
    configs = [write_loader(tmp_path, name, source, sink) for name in ("a", "b")]
    loaders = [spawn([*SLUICE, "run", str(config)]) for config in configs]

    def loaded(config: Path) -> int:
        try:
            return sent_events(admin_url(config)).get("ch", 0)
        except OSError:
            return 0

    # both get some: the stream hands the messages out across the loaders
    await wait_until(lambda: all(loaded(c) > 0 for c in configs), timeout=60)
    loaders[0].kill()  # SIGKILL: no stop, no acknowledgement of what it held
    loaders[0].wait(10)
    assert loaders[0].returncode == -signal.SIGKILL

    def stored() -> int:
        return int(
            clickhouse_server.query(
                f"SELECT uniqExact(product_id, trade_id) FROM default.{table}"
            ).strip()
        )

    await wait_until(lambda: stored() == len(published), timeout=90)
    await wait_until(lambda: consumer_settled(client, stream), timeout=30)
    assert stop(loaders[1]) == 0
    rows = clickhouse_server.rows(f"SELECT product_id, trade_id FROM default.{table} FINAL")
    assert len(rows) == len(published), "a trade stored twice survives FINAL"
    assert {(p, int(t)) for p, t in rows} == published


@pytest.mark.parametrize(
    "simulator", [synthetic(("BTC-USD", "ETH-USD"), trades_per_sec=300)], indirect=True
)
async def test_redundant_ingesters_one_killed_mid_run_leave_every_trade_once_in_clickhouse(
    cluster: LocalNatsCluster,
    stream: str,
    client: Any,
    tmp_path: Path,
    spawn: Spawn,
    simulator: CoinbaseSimulator,
) -> None:
    ports = {name: free_port() for name in ("a", "b")}
    configs = {}
    for name, port in ports.items():
        config = {
            "data_dir": str(tmp_path / name),
            "admin": {"listen": f"127.0.0.1:{port}"},
            "sources": {
                "coinbase": {
                    "type": "coinbase",
                    "url": simulator.url,
                    "products": ["BTC-USD", "ETH-USD"],
                    "channels": ["ticker", "heartbeat"],
                }
            },
            "sinks": {
                "log": {
                    **sink_config(cluster, stream),
                    "inputs": ["coinbase.ticker"],
                    "buffer": {"type": "disk"},
                }
            },
        }
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(config))
    ingesters = {name: spawn([*SLUICE, "run", str(path)]) for name, path in configs.items()}

    def published(name: str) -> int:
        try:
            return sent_events(f"http://127.0.0.1:{ports[name]}/").get("log", 0)
        except OSError:
            return 0

    await wait_until(lambda: published("a") > 100 and published("b") > 100, timeout=60)
    ingesters["a"].kill()  # A dies; B carries the same trades on
    ingesters["a"].wait(10)
    after_kill = published("b")
    await wait_until(lambda: published("b") > after_kill + 300, timeout=60)
    assert stop(ingesters["b"]) == 0

    stored = await read_stream(client, stream)
    keys = trade_keys(stored)
    assert len(keys) == len(stored), "the stream kept a trade twice"
    for product in ("BTC-USD", "ETH-USD"):
        ids = sorted(t for p, t in keys if p == product)
        assert ids == list(range(ids[0], ids[0] + len(ids))), f"{product}: a trade is missing"
    chdb = tmp_path / "chdb"
    loader = {
        "data_dir": str(tmp_path / "loader"),
        "admin": {"enabled": False},
        "sources": {"log": source_config(cluster, stream)},
        "sinks": {
            "ch": {
                "type": "clickhouse",
                "inputs": ["log.ticker"],
                "path": str(chdb),
                "database": "d",
                "table": "t",
                "batch": {"max_age_secs": 0.1},
            }
        },
    }
    pipeline = build_pipeline(loader)
    await run_pipeline(pipeline, until=lambda: sent(pipeline, "ch", "clickhouse") >= len(stored))
    store = LocalChdb(chdb)
    try:
        rows = store.rows("SELECT product_id, trade_id FROM d.t FINAL")
    finally:
        store.close()
    assert len(rows) == len(keys)
    assert {(p, int(t)) for p, t in rows} == keys


async def test_killing_the_stream_leader_mid_run_loses_nothing(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path
) -> None:
    total = 3000
    config = {
        "data_dir": str(tmp_path / "ingest"),
        "admin": {"enabled": False},
        "sources": {
            "gen": {
                "type": "generator",
                "count": total,
                "events_per_sec": 500,
                "batch_size": 50,
                "record_bytes": 100,
            }
        },
        "sinks": {
            "log": {
                **sink_config(cluster, stream),
                "subject": f"{stream}.seq",
                "msg_id": ["seq"],
                "ack_timeout_secs": 2,
                "inputs": ["gen"],
                "retry": {"initial_backoff_secs": 0.2, "max_backoff_secs": 1},
            }
        },
    }
    pipeline = build_pipeline(config)
    task = asyncio.create_task(pipeline.run())
    try:
        await wait_until(lambda: sent(pipeline, "log") >= 1000, timeout=30)
        leader = await cluster.stream_leader(stream)
        cluster.kill_node(leader)
        result = await asyncio.wait_for(task, 90)
    finally:
        pipeline.stop("test over")
        if not task.done():
            await asyncio.wait_for(task, 60)
        for node in cluster.members:
            if node.process is None:
                cluster.start_node(node)
        await cluster.wait_ready()  # whole again for the next test
    assert result.ok
    assert sent(pipeline, "log") == total
    stored = await read_stream(client, stream, at_least=total)
    assert sorted(row["seq"] for row in stored) == list(range(total))


async def test_a_message_that_is_not_json_goes_to_the_dead_letters_with_its_sequence(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path
) -> None:
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=3)
    await js.publish(f"{stream}.x", b'{"n": 1}')
    await js.publish(f"{stream}.x", b"not json")
    await js.publish(f"{stream}.x", b"[1, 2]")
    await js.publish(f"{stream}.x", b'{\n  "n": 3\r\n}')  # valid JSON over lines
    await js.publish(f"{stream}.x", b'{"n": 2}')
    config, out = loader_to_file(cluster, stream, tmp_path)
    dead = tmp_path / "data/dead_letters.jsonl"
    result = await run_pipeline(
        config, until=lambda: len(read_jsonl(out)) == 3 and len(read_jsonl(dead)) == 2
    )
    assert result.ok
    assert read_jsonl(out) == [{"n": 1}, {"n": 3}, {"n": 2}]
    assert len(out.read_bytes().splitlines()) == 3  # each record one line of JSON Lines
    reasons = [letter["reason"] for letter in read_jsonl(dead)]
    assert f"stream {stream}, sequence 2" in reasons[0]
    assert "invalid JSON" in reasons[0]
    assert f"stream {stream}, sequence 3" in reasons[1]
    assert "not a JSON object" in reasons[1]
    await wait_until(lambda: consumer_settled(client, stream), timeout=20)


async def test_the_consumers_pending_messages_are_in_the_metrics(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path
) -> None:
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=3)
    for n in range(300):
        await js.publish(f"{stream}.x", orjson.dumps({"n": n}))
    out = tmp_path / "out.jsonl"
    config = {
        "data_dir": str(tmp_path / "data"),
        "admin": {"enabled": False},
        "sources": {
            "log": source_config(
                cluster,
                stream,
                batch_size=20,
                stats_interval_secs=0.1,
                rate_limit={"events_per_sec": 100},
            )
        },
        "sinks": {"out": {"type": "file", "path": str(out), "inputs": ["log"]}},
    }
    labels = {"component_id": "log", "component_kind": "source", "component_type": "nats"}
    pipeline = build_pipeline(config)
    seen: list[float] = []

    def pending() -> float | None:
        value = pipeline.metrics.registry.get_sample_value(
            "sluice_nats_consumer_pending_messages", labels
        )
        if value is not None:
            seen.append(value)
        return value

    def done() -> bool:
        return pending() == 0 and len(read_jsonl(out)) == 300

    assert (await run_pipeline(pipeline, until=done)).ok
    assert max(seen) > 0, "the pending count never showed the backlog"
    assert read_jsonl(out) == [{"n": n} for n in range(300)]


async def test_a_sink_slower_than_ack_wait_causes_no_redelivery(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path
) -> None:
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=3)
    for n in range(60):
        await js.publish(f"{stream}.x", orjson.dumps({"n": n}))
    out = tmp_path / "out.jsonl"
    config = {
        "data_dir": str(tmp_path / "data"),
        "admin": {"enabled": False},
        "sources": {
            "log": source_config(
                cluster, stream, batch_size=20, ack_wait_secs=1, progress_interval_secs=0.25
            )
        },
        "sinks": {
            "out": {
                "type": "flaky",
                "path": str(out),
                "inputs": ["log"],
                "delay_secs": 2.5,  # each write outlasts ack_wait: only +WIP keeps the messages
                "batch": {"max_events": 20, "max_age_secs": 0.05},
            }
        },
    }
    pipeline = build_pipeline(config)
    assert (await run_pipeline(pipeline, until=lambda: len(read_jsonl(out)) == 60)).ok
    await wait_until(lambda: consumer_settled(client, stream), timeout=20)
    info = await js.consumer_info(stream, "loaders")
    assert info.num_redelivered == 0
    assert read_jsonl(out) == [{"n": n} for n in range(60)]


def test_unreachable_servers_make_readyz_503_naming_the_source(
    tmp_path: Path, spawn: Spawn
) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "c.yaml"
    listen = f"127.0.0.1:{free_port()}"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "admin": {"listen": listen},
                "sources": {
                    "log": {
                        "type": "nats",
                        "servers": [f"nats://127.0.0.1:{port}"],
                        "stream": "S",
                        "durable": "d",
                        "connect_timeout_secs": 0.5,
                    }
                },
                "sinks": {"out": {"type": "file", "path": str(tmp_path / "o"), "inputs": ["log"]}},
            }
        )
    )
    process = spawn([*SLUICE, "run", str(config)])

    def not_ready() -> dict[str, str] | None:
        try:
            with urllib.request.urlopen(f"http://{listen}/readyz", timeout=5):
                return None
        except urllib.error.HTTPError as exc:
            status = exc.code
            body: dict[str, str] = json.loads(exc.read())["not_ready"]
        except OSError:
            return None
        assert status == 503
        return body if "cannot connect" in body.get("source/log", "") else None

    found = wait_for(not_ready, timeout=30)
    assert f"127.0.0.1:{port}" in found["source/log"]
    assert process.poll() is None, "an unreachable server must not end the run"
    assert stop(process) == 0


async def test_a_stream_that_does_not_exist_is_waited_for_and_named_by_readiness(
    cluster: LocalNatsCluster, stream: str, client: Any, tmp_path: Path
) -> None:
    config, out = loader_to_file(cluster, stream, tmp_path)
    pipeline = build_pipeline(config)
    task = asyncio.create_task(pipeline.run())
    try:

        async def waiting() -> bool:
            reason = (await pipeline.readiness())["source/log"]
            return not reason.ready and f"stream {stream} does not exist" in reason.reason

        await wait_until(waiting, timeout=30)
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=3)
        await js.publish(f"{stream}.x", b'{"n": 1}')
        await wait_until(lambda: read_jsonl(out) == [{"n": 1}], timeout=30)
    finally:
        pipeline.stop("test over")
        result = await asyncio.wait_for(task, 60)
    assert result.ok


def test_a_token_from_the_environment_authenticates_and_is_never_logged(
    tmp_path: Path, spawn: Spawn
) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    server = LocalNatsCluster(tmp_path / "nats", nodes=1, token=secret)
    server.start()
    try:
        config = tmp_path / "c.yaml"
        sink = {
            "type": "nats",
            "inputs": ["gen"],
            "servers": server.urls,
            "stream": "AUTH",
            "subject": "auth.records",
            "token": "${NATS_TOKEN}",
            "create_stream": {"replicas": 1},
        }
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(tmp_path / "data"),
                    "admin": {"enabled": False},
                    "log": {"level": "debug"},
                    "sources": {"gen": {"type": "generator", "count": 100}},
                    "sinks": {"log": sink},
                }
            )
        )
        process = spawn([*SLUICE, "run", str(config)], NATS_TOKEN=secret)
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert secret not in stdout + stderr

        async def stored() -> int:
            nc = await server.connect()
            try:
                info = await nc.jetstream().stream_info("AUTH")
            finally:
                await nc.close()
            return int(info.state.messages)

        assert asyncio.run(stored()) == 100
    finally:
        server.stop()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1: (ca, cert, key) files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("sluice test CA"))
        .issuer_name(name("sluice test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_the_sink_and_source_speak_tls_verified_by_a_given_ca(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    server = LocalNatsCluster(
        tmp_path / "nats",
        nodes=1,
        server_args=["--tls", "--tlscert", str(cert), "--tlskey", str(key)],
        client_options={"tls": ssl.create_default_context(cafile=str(ca))},
    )
    await asyncio.to_thread(server.start)
    try:
        out = tmp_path / "out.jsonl"  # the source waits for the stream the sink creates
        tls = {"ca_file": str(ca)}
        source = {"type": "nats", "servers": server.urls, "stream": "TLS", "durable": "tls"}
        config = {
            "data_dir": str(tmp_path / "data"),
            "admin": {"enabled": False},
            "sources": {
                "gen": {"type": "generator", "count": 50, "record_bytes": 60},
                "log": {**source, "tls": tls},
            },
            "sinks": {
                "pub": {
                    "type": "nats",
                    "inputs": ["gen"],
                    "servers": server.urls,
                    "stream": "TLS",
                    "subject": "tls.records",
                    "create_stream": {"replicas": 1},
                    "tls": tls,
                },
                "out": {"type": "file", "path": str(out), "inputs": ["log"]},
            },
        }
        assert (await run_pipeline(config, until=lambda: len(read_jsonl(out)) == 50)).ok
        assert sorted(row["seq"] for row in read_jsonl(out)) == list(range(50))
    finally:
        server.stop()


@pytest.mark.parametrize(
    "name", ["examples/ingest_to_nats.yaml", "examples/nats_to_clickhouse.yaml"]
)
def test_the_nats_example_configs_load(name: str) -> None:
    loaded = load_config(ROOT / name, Registry.from_entry_points())
    assert {c.type for c in [*loaded.model.sources.values(), *loaded.model.sinks.values()]} & {
        "nats"
    }


class TestNatsSinkConformance(SinkConformance):
    """The shipped sink suite against the ``nats`` sink (the stream read back in order)."""

    bad_record: ClassVar[dict[str, Any] | None] = {"n": None, "text": "no subject"}

    @property
    def stream_name(self) -> str:
        return "C" + self.workdir.name.replace("-", "_")[-30:]

    def sink_config(self) -> dict[str, Any]:
        cluster: LocalNatsCluster = self.request.getfixturevalue("cluster")
        return {
            "type": "nats",
            "servers": cluster.urls,
            "stream": self.stream_name,
            "subject": f"{self.stream_name}.{{n}}",
            "create_stream": {"replicas": 3, "subjects": [f"{self.stream_name}.>"]},
        }

    def stored(self) -> list[dict[str, Any]]:
        cluster: LocalNatsCluster = self.request.getfixturevalue("cluster")

        async def read() -> list[dict[str, Any]]:
            nc = await cluster.connect()
            try:
                try:
                    return await read_stream(nc, self.stream_name)
                except nats.js.errors.NotFoundError:
                    return []
            finally:
                await nc.close()

        return asyncio.run(read())
