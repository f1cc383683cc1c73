"""The clickhouse sink against a real cluster: three ``clickhouse-server`` processes (Debian's
18.16) and a ZooKeeper, started by the session fixture (shard 1: servers 0 and 1, replicas of one
another; shard 2: server 2). The sink makes the tables itself (``create`` with ``cluster``), sends
to several endpoints (``urls``), fails over when the one it writes to is SIGKILLed and comes back
when it returns."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sluice.config.loader import load_config_text
from sluice.records import Record
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline
from sluice.simulator import CoinbaseSimulator, SimulatorOptions
from sluice.sinks.clickhouse.endpoints import EndpointPool
from sluice.sinks.clickhouse.sink import ClickHouseSink
from sluice.testing.clickhouse import LocalCluster, LocalServer, QueryError
from sluice.testing.doubles import free_port
from tests.conftest import SLUICE, Spawn, wait_for, wait_until
from tests.integration.support import build_pipeline, list_source, run_pipeline, ticker_record

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

DATABASE = "sluice_cluster"


def sink_yaml(
    tmp_path: Path, urls: list[str], table: str, extra: str = "", source: str = ""
) -> str:
    return f"""
admin: {{enabled: false}}
data_dir: {tmp_path / "data"}
sources:
  src: {source or "{type: list, batch_size: 500}"}
sinks:
  ch:
    type: clickhouse
    inputs: [src]
    urls: [{", ".join(urls)}]
    cluster: sluice
    database: {DATABASE}
    table: {table}
    connect_timeout_secs: 2
    timeout_secs: 20
    retry: {{initial_backoff_secs: 0.2, max_backoff_secs: 1}}
{extra}
"""


def count(server: LocalServer, sql: str) -> int:
    [[value]] = server.rows(sql)
    return int(value)


def stored(server: LocalServer, table: str) -> int:
    """Rows of ``table`` as ``server`` sees them; -1 while it does not exist yet."""
    try:
        return count(server, f"SELECT count() FROM {table}")
    except QueryError:
        return -1


def pool_of(pipeline: Any) -> EndpointPool:
    worker = pipeline.sink("ch")
    assert worker is not None
    sink = worker.sink
    assert isinstance(sink, ClickHouseSink)
    pool = sink._client
    assert isinstance(pool, EndpointPool)
    return pool


def spread_ticker(n: int) -> Record:
    """Tickers of 16 products, so that a hash of product_id reaches every shard."""
    return ticker_record(n, product_id=f"P{n % 16:02d}-USD")


@pytest.mark.clickhouse_server
async def test_the_endpoint_written_to_is_killed_every_record_arrives_once_and_the_sink_comes_back(
    clickhouse_cluster: LocalCluster, tmp_path: Path, table: str
) -> None:
    """Tickers flow at 2,000/s into the Distributed table through server 0; it is SIGKILLed
    mid-run. The sink moves to server 1 (the same batch with the same token; on 18.16 the
    replicated table drops an identical block by its hash), and back to server 0 once it is
    started again. Every record is stored exactly once: the raw count and FINAL agree."""
    first, second, third = clickhouse_cluster.servers
    total = 24_000
    yaml = sink_yaml(
        tmp_path,
        [first.url, second.url],
        table,
        "    batch: {max_events: 1000, max_age_secs: 0.2}",
        source="{type: list, batch_size: 200, rate_limit: {events_per_sec: 2000, burst: 200}}",
    )
    pipeline = build_pipeline(yaml, [spread_ticker(n) for n in range(total)])
    run = asyncio.create_task(run_pipeline(pipeline, timeout=240))
    dist = f"{DATABASE}.{table}"
    await wait_until(lambda: stored(second, dist) >= 3000, timeout=90)
    pool = pool_of(pipeline)
    assert pool.used == [first.url]
    first.kill()
    killed_at = list_source(pipeline).emitted
    await wait_until(lambda: pool.used[-1] == second.url, timeout=60)
    stored_on_second = count(second, f"SELECT count() FROM {dist}")
    await wait_until(
        lambda: count(second, f"SELECT count() FROM {dist}") >= stored_on_second + 2000,
        timeout=60,
    )
    await asyncio.to_thread(first.start)
    await wait_until(lambda: pool.used[-1] == first.url, timeout=60)
    result = await asyncio.wait_for(run, timeout=240)
    assert result.ok, result.error
    assert killed_at < total  # the kill happened while records were still coming
    assert pool.used[:2] == [first.url, second.url]
    assert pool.used[-1] == first.url  # back to the preferred endpoint

    local = f"{DATABASE}.{table}_local"

    def converged() -> bool:
        # the replicas of shard 1 hold the same rows, and the Distributed table sees them all
        return (
            count(first, f"SELECT count() FROM {local}")
            == count(second, f"SELECT count() FROM {local}")
            and count(first, f"SELECT count() FROM {dist}") == total
        )

    await wait_until(converged, timeout=60)
    for server in (first, second):
        raw = count(server, f"SELECT count() FROM {dist}")
        final = count(server, f"SELECT count() FROM {dist} FINAL")
        shard1 = count(server, f"SELECT count() FROM {local} FINAL")
        shard2 = count(third, f"SELECT count() FROM {local} FINAL")
        distinct = count(server, f"SELECT uniqExact(product_id, sequence) FROM {dist}")
        assert (raw, final, shard1 + shard2, distinct) == (total, total, total, total)


@pytest.mark.clickhouse_server
async def test_two_shards_each_get_rows_and_the_distributed_table_counts_what_was_sent(
    clickhouse_cluster: LocalCluster, tmp_path: Path, table: str
) -> None:
    first, second, third = clickhouse_cluster.servers
    total = 5000
    result = await run_pipeline(
        sink_yaml(tmp_path, [third.url], table), [spread_ticker(n) for n in range(total)]
    )
    assert result.ok, result.error
    local = f"{DATABASE}.{table}_local"

    def shard_counts() -> tuple[int, int] | None:
        counts = (
            count(first, f"SELECT count() FROM {local}"),
            count(third, f"SELECT count() FROM {local}"),
        )
        return counts if sum(counts) == total else None

    # the insert is synchronous (insert_distributed_sync=1), but a shard-1 row goes to one of its
    # two replicas and reaches the other through ZooKeeper: `first` may see it a moment later
    on_shard1, on_shard2 = await wait_until(shard_counts, 60)
    assert on_shard1 > 0 and on_shard2 > 0
    # one product lives on one shard (sharded by a hash of product_id)
    [[both]] = first.rows(
        f"SELECT count() FROM {local} WHERE product_id IN "
        f"(SELECT product_id FROM remote('127.0.0.1:{third.tcp_port}', {local}))"
    )
    assert both == 0
    # the replica of shard 1 has the rows too (replicated through ZooKeeper); once it has, the
    # Distributed table counts every row from any server, whichever replica it reads
    await wait_until(lambda: count(second, f"SELECT count() FROM {local}") == on_shard1, 60)
    for server in clickhouse_cluster.servers:
        assert count(server, f"SELECT count() FROM {DATABASE}.{table}") == total


@pytest.mark.clickhouse_server
async def test_monitoring_queries_run_against_the_distributed_table(
    clickhouse_cluster: LocalCluster, tmp_path: Path, table: str
) -> None:
    from sluice.sinks.clickhouse.monitoring_sql import QUERIES, render

    first = clickhouse_cluster.servers[0]
    result = await run_pipeline(
        sink_yaml(tmp_path, [first.url], table), [spread_ticker(n) for n in range(300)]
    )
    assert result.ok, result.error
    for query in QUERIES:
        if query.portable:
            first.rows(render(query.name, f"{DATABASE}.{table}"))
    [[rows]] = first.rows(
        f"SELECT sum(rows) FROM ({render('freshness', f'{DATABASE}.{table}', hours=100_000)})"
    )
    assert rows == 300
    # `sluice monitor` on the stopped pipeline's config: through the endpoints, the first down
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"""
admin: {{enabled: false}}
data_dir: {tmp_path / "data"}
sources:
  coinbase: {{type: coinbase, products: [BTC-USD]}}
sinks:
  ch:
    type: clickhouse
    inputs: [coinbase]
    urls: [http://127.0.0.1:{free_port()}, {clickhouse_cluster.servers[2].url}]
    cluster: sluice
    database: {DATABASE}
    table: {table}
    connect_timeout_secs: 2
"""
    )
    monitor = await asyncio.to_thread(
        subprocess.run,
        [*SLUICE, "monitor", str(config), "--format", "json", "--minutes", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert monitor.returncode == 0, monitor.stderr
    assert json.loads(monitor.stdout)["table"] == f"{DATABASE}.{table}"


def metric_samples(admin_url: str, name: str) -> dict[str, float]:
    with urllib.request.urlopen(admin_url + "metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, value = line.rsplit(" ", 1)
            endpoint = head.split('endpoint="', 1)[1].split('"', 1)[0]
            samples[endpoint] = float(value)
    return samples


def readyz(admin_url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(admin_url + "readyz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.clickhouse_server
def test_a_down_endpoint_shows_in_metrics_and_readyz_without_its_password(
    clickhouse_cluster: LocalCluster, tmp_path: Path, table: str, spawn: Spawn
) -> None:
    """``urls`` lists a port nobody listens on first, then a server given with its password in
    the URL: the run writes to the server; /metrics has one ``sluice_clickhouse_endpoint_up``
    series per endpoint (0 and 1, no password in any label) and /readyz is ready with the down
    endpoint in its detail."""
    server = clickhouse_cluster.servers[0]
    dead = f"http://127.0.0.1:{free_port()}"
    with_password = f"http://sluice:{server.password}@127.0.0.1:{server.http_port}"
    config = tmp_path / "p.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
admin: {{listen: '127.0.0.1:0'}}
sources:
  gen: {{type: generator, count: 1000000, events_per_sec: 200}}
sinks:
  ch:
    type: clickhouse
    inputs: [gen]
    urls: ["{dead}", "{with_password}"]
    database: {DATABASE}
    table: {table}
    ddl: ddl.sql
    connect_timeout_secs: 2
    batch: {{max_events: 100, max_age_secs: 0.2}}
    retry: {{initial_backoff_secs: 0.2, max_backoff_secs: 1}}
"""
    )
    (tmp_path / "ddl.sql").write_text(
        "CREATE DATABASE IF NOT EXISTS {database};\n"
        "CREATE TABLE IF NOT EXISTS {database}.{table} (seq UInt64, payload String)\n"
        "ENGINE = MergeTree() ORDER BY seq;\n"
    )
    process = spawn([*SLUICE, "run", str(config), "--log-format", "json"], cwd=tmp_path)
    lines: list[str] = []

    def admin_url() -> str | None:
        assert process.stderr is not None
        line = process.stderr.readline()
        lines.append(line)
        if '"admin.listening"' in line:
            return str(json.loads(line)["url"])
        assert line or process.poll() is None, "".join(lines)[-3000:]
        return None

    url: str = wait_for(admin_url, timeout=60, interval=0)
    wait_for(lambda: stored(server, f"{DATABASE}.{table}") >= 100, timeout=60)
    samples = wait_for(lambda: metric_samples(url, "sluice_clickhouse_endpoint_up"), timeout=10)
    assert samples == {dead: 0.0, server.url: 1.0}
    with urllib.request.urlopen(url + "metrics", timeout=5) as answer:
        assert server.password not in answer.read().decode()
    status, body = readyz(url)
    assert status == 200, body
    detail = body["detail"]["sink/ch"]
    assert f"{dead} down" in detail and f"{server.url} up" in detail
    assert server.password not in json.dumps(body)


EXAMPLE = Path(__file__).parents[2] / "examples" / "clickhouse_cluster.yaml"


@pytest.mark.clickhouse_server
async def test_the_cluster_example_writes_tickers_through_the_distributed_table(
    clickhouse_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/clickhouse_cluster.yaml as shipped, its endpoints one server of each shard, the
    Coinbase source pointed at the local simulator."""
    first, _, third = clickhouse_cluster.servers
    first.query("DROP DATABASE IF EXISTS coinbase_demo ON CLUSTER sluice")
    monkeypatch.setenv("CLICKHOUSE_URL_1", first.url)
    monkeypatch.setenv("CLICKHOUSE_URL_2", third.url)
    for name in ("CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    registry = Registry.from_entry_points()
    text = EXAMPLE.read_text() + f"admin: {{enabled: false}}\ndata_dir: {tmp_path}\n"
    loaded = load_config_text(text, registry, source=str(EXAMPLE))
    simulator = CoinbaseSimulator(
        SimulatorOptions(
            mode="synthetic", trades_per_sec=400, products=("BTC-USD", "ETH-USD", "SOL-USD")
        )
    )
    await simulator.start("127.0.0.1", 0)
    try:
        sources = loaded.model.sources
        sources["coinbase"] = sources["coinbase"].model_copy(update={"url": simulator.url})
        pipeline = Pipeline.build(loaded, registry)
        written = pipeline.sink("ticks")
        assert written is not None
        result = await run_pipeline(
            pipeline, until=lambda: written.metrics.totals()["sent"] >= 600, timeout=90
        )
    finally:
        await simulator.close()
    assert result.ok, result.error
    sent = written.metrics.totals()["sent"]
    try:
        assert count(first, "SELECT count() FROM coinbase_demo.coinbase_ticker") == sent
        shards = [
            count(server, "SELECT count() FROM coinbase_demo.coinbase_ticker_local")
            for server in (first, third)
        ]
        # BTC, ETH and SOL all hash to shard 2 of 2: sharding by product is as even as the
        # products are many (the two-shard test above uses 16)
        assert shards == [0, sent]
    finally:
        first.query("DROP DATABASE IF EXISTS coinbase_demo ON CLUSTER sluice")
