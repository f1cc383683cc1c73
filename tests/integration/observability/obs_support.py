"""Helpers for the observability tests: a ClickHouse 18.16 server, a pipeline run in process with
its admin server, Prometheus text parsing, and the ticker table with a deliberate stop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sluice.config import load_config_text
from sluice.config.models import SinkConfig, SourceConfig
from sluice.metrics import Metrics
from sluice.observe.service import Observability
from sluice.plugin import Sink, Source
from sluice.records import Record, SourceBatch
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline, RunResult

CLICKHOUSE_SERVER = "/usr/sbin/clickhouse-server"
REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- ClickHouse 18.16 ------------------------------------------------------------------------------

_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{root}/log/server.log</log>
        <errorlog>{root}/log/error.log</errorlog><console>0</console></logger>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>20</max_concurrent_queries>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default><max_memory_usage>1000000000</max_memory_usage></default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
            <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
        </interval></default>
    </quotas>
</yandex>
"""


GRAFANA_PASSWORD = "grafana-test-password"


def grafana_users_d() -> str:
    """The shipped users.d file for old servers, with the test password's hash filled in."""
    text = (REPO / "observability/grafana/clickhouse/users.d/grafana.xml").read_text()
    digest = hashlib.sha256(GRAFANA_PASSWORD.encode()).hexdigest()
    assert "REPLACE_WITH_SHA256_HEX_OF_THE_PASSWORD" in text
    return text.replace("REPLACE_WITH_SHA256_HEX_OF_THE_PASSWORD", digest)


class ClickHouseError(RuntimeError):
    pass


@dataclass
class ClickHouseServer:
    """A clickhouse-server (Debian's 18.16) with its own config, data and free ports."""

    root: Path
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self, users_d: dict[str, str] | None = None) -> None:
        for sub in ("log", "data", "tmp", "user_files", "format_schemas", "users.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for name, text in (users_d or {}).items():
            (self.root / "users.d" / name).write_text(text)
        (self.root / "users.xml").write_text(_USERS)
        for _attempt in range(3):
            self.http_port = free_port()
            config = _CONFIG.format(root=self.root, http_port=self.http_port, tcp_port=free_port())
            (self.root / "config.xml").write_text(config)
            with (self.root / "log" / "stderr.log").open("wb") as stderr:
                self.process = subprocess.Popen(
                    [CLICKHOUSE_SERVER, f"--config-file={self.root / 'config.xml'}"],
                    cwd=self.root,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            if self._wait_ready(30.0):
                return
            self.stop()
        raise RuntimeError(f"clickhouse-server did not start; see {self.root / 'log'}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}ping", timeout=1) as r,
            ):
                if r.read().strip() == b"Ok.":
                    return True
            time.sleep(0.1)
        return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def query(self, sql: str, user: str = "default", password: str = "") -> str:
        params = urllib.parse.urlencode({"user": user, "password": password})
        request = urllib.request.Request(f"{self.url}?{params}", data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise ClickHouseError(exc.read().decode(errors="replace")) from exc

    def rows(self, sql: str, **kwargs: str) -> list[list[str]]:
        text = self.query(sql + "\nFORMAT TabSeparated", **kwargs)
        return [line.split("\t") for line in text.splitlines()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def clickhouse_available() -> bool:
    return os.access(CLICKHOUSE_SERVER, os.X_OK)


# -- chDB --------------------------------------------------------------------------------------------


class Chdb:
    """A chDB session with a query helper like the server's."""

    def __init__(self, path: Path) -> None:
        from chdb import session

        self.session = session.Session(str(path))

    def query(self, sql: str) -> str:
        result = self.session.query(sql, "TabSeparated")
        return str(result.bytes().decode())

    def rows(self, sql: str) -> list[list[str]]:
        return [line.split("\t") for line in self.query(sql).splitlines()]

    def close(self) -> None:
        self.session.close()


# -- the ticker table with a deliberate stop ---------------------------------------------------------

TICKER_COLUMNS = [
    ("type", "String"),
    ("sequence", "UInt64"),
    ("product_id", "String"),
    ("price", "Float64"),
    ("open_24h", "Float64"),
    ("volume_24h", "Float64"),
    ("low_24h", "Float64"),
    ("high_24h", "Float64"),
    ("volume_30d", "Float64"),
    ("best_bid", "Float64"),
    ("best_ask", "Float64"),
    ("side", "String"),
    ("time", "{time_type}"),
    ("trade_id", "UInt64"),
    ("last_size", "Float64"),
    ("best_bid_size", "Float64"),
    ("best_ask_size", "Float64"),
]


@dataclass
class SeededTable:
    """What was inserted: row times (unix seconds) and the trade-id gaps made on purpose."""

    table: str
    times: list[float] = field(default_factory=list)
    gaps: list[tuple[str, int, int, int]] = field(default_factory=list)
    """``(product_id, after_trade_id, before_trade_id, missed)``."""
    last_time: dict[str, float] = field(default_factory=dict)

    def per_minute(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for t in self.times:
            minute = int(t // 60) * 60
            counts[minute] = counts.get(minute, 0) + 1
        return counts


def ticker_ddl(table: str, flavor: str) -> str:
    """``flavor``: ``current`` (DateTime64(6)) or ``18.16`` (DateTime, no trailing comma)."""
    time_type = "DateTime64(6)" if flavor == "current" else "DateTime"
    columns = ",\n    ".join(f"{n} {t.format(time_type=time_type)}" for n, t in TICKER_COLUMNS)
    return (
        f"CREATE TABLE {table} (\n    {columns}\n) ENGINE = MergeTree ORDER BY (product_id, time)"
    )


def seed_ticker(execute: Callable[[str], Any], table: str, flavor: str, now: float) -> SeededTable:
    """Create ``table`` and fill it: BTC-USD ticks every 10 s from 40 to 26 minutes ago, nothing
    for 10 minutes, ticks again from 15 to about 6 minutes ago, then nothing until now (the feed
    stopped). ETH-USD ticks every 30 s in the same two stretches. BTC-USD has two trade-id gaps:
    10 trades missed across the stop, 1 inside the second stretch."""
    execute(f"CREATE DATABASE IF NOT EXISTS {table.split('.')[0]}")
    execute(ticker_ddl(table, flavor))
    seeded = SeededTable(table)
    base = int(now)
    stretches = [(base - 2400, base - 1560), (base - 900, base - 360)]
    rows: list[tuple[str, float, int, int]] = []  # product, time, trade_id, sequence
    btc_trade, eth_trade, sequence = 1000, 500, 10_000_000_000
    for index, (start, end) in enumerate(stretches):
        if index == 1:
            btc_trade += 10
            seeded.gaps.append(("BTC-USD", btc_trade - 11, btc_trade, 10))
        for step, t in enumerate(range(start, end, 10)):
            if index == 1 and step == 20:
                btc_trade += 1
                seeded.gaps.append(("BTC-USD", btc_trade - 2, btc_trade, 1))
            rows.append(("BTC-USD", t + 0.123456, btc_trade, sequence))
            btc_trade += 1
            sequence += 7
            if step % 3 == 0:
                rows.append(("ETH-USD", t + 0.5, eth_trade, sequence))
                eth_trade += 1
                sequence += 3
    # a duplicate delivery of one trade must not count as a gap
    rows.append(rows[5])
    if flavor != "current":  # DateTime holds whole seconds
        rows = [(product, float(int(t)), trade, seq) for product, t, trade, seq in rows]
    to_time = "toDateTime64({:.6f}, 6)" if flavor == "current" else "toDateTime({:.0f})"
    values = ",".join(
        f"('ticker',{seq},'{product}',100.5,99,1234.5,98,101,99999,100.4,100.6,'buy',"
        f"{to_time.format(t)},{trade},0.01,1.5,2.5)"
        for product, t, trade, seq in rows
    )
    execute(f"INSERT INTO {table} VALUES {values}")
    for product, t, _trade, _seq in rows:
        seeded.times.append(t)
        seeded.last_time[product] = max(seeded.last_time.get(product, 0.0), t)
    return seeded


# -- a pipeline in this process, with its admin server ---------------------------------------------


@dataclass
class Running:
    pipeline: Pipeline
    observability: Observability
    task: asyncio.Task[RunResult]
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        assert self.observability.admin is not None
        return self.observability.admin.url

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.url + path.lstrip("/")) as response:
            return response.status, await response.text()

    async def json(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url + path.lstrip("/")) as response:
            return response.status, await response.json()

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, text = await self.get("/metrics")
        assert status == 200
        return parse_metrics(text)


@contextlib.asynccontextmanager
async def run_in_process(
    config_text: str, registry: Registry | None = None, *, metrics_enabled: bool = True
) -> AsyncIterator[Running]:
    """Run the pipeline of ``config_text`` here, with history, alerts and the admin server
    (``admin.listen`` should use port 0). The admin server outlives the pipeline's end, so a
    test can read the final counts; everything stops when the block exits."""
    registry = registry or Registry.from_entry_points()
    loaded = load_config_text(config_text, registry)
    pipeline = Pipeline.build(loaded, registry, Metrics(enabled=metrics_enabled))
    observability = Observability(pipeline, loaded.model)
    await observability.start()
    task = asyncio.create_task(pipeline.run())
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield Running(pipeline, observability, task, session)
    finally:
        pipeline.stop("test finished")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await session.close()
        await observability.close()


async def wait_for(
    condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text to ``{(sample name, labels): value}``."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The one sample of ``name`` whose labels include ``labels``; KeyError if none."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    if len(found) != 1:
        raise KeyError(f"{name} {labels}: {len(found)} samples")
    return found[0]


def sluice_bin() -> str:
    found = shutil.which("sluice", path=str(Path(sys.executable).parent))
    assert found, "the sluice console script is not installed in this environment"
    return found


class LogFile:
    """The process log, as JSON lines written to a file (see the ``logs`` fixture)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def find(self, event: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e["event"] == event), None)

    def text(self) -> str:
        return self.path.read_text()


# -- test doubles: a source and a sink the test drives ---------------------------------------------


class ControlledSourceConfig(SourceConfig):
    """A source whose batches the test hands in."""

    type: Literal["controlled"] = "controlled"


class ControlledSource(Source[ControlledSourceConfig]):
    """Yields what the test puts in ``feed``; an exception put there is raised (a disconnect)."""

    config_model = ControlledSourceConfig
    description = "test double"

    def __init__(self, component_id: str, config: ControlledSourceConfig) -> None:
        super().__init__(component_id, config)
        self.feed: asyncio.Queue[SourceBatch | BaseException | None] = asyncio.Queue()
        self.calls = 0

    def push(self, count: int, kind: str = "tick") -> None:
        now = time.time()
        records = [Record.from_data({"n": i, "t": now}, kind, now) for i in range(count)]
        self.feed.put_nowait(SourceBatch(records))

    async def batches(self) -> AsyncIterator[SourceBatch]:
        self.calls += 1
        while True:
            item = await self.feed.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class SwitchableSinkConfig(SinkConfig):
    """A sink that keeps what it writes and fails while told to."""

    type: Literal["switchable"] = "switchable"


class SwitchableSink(Sink[SwitchableSinkConfig]):
    config_model = SwitchableSinkConfig
    description = "test double"

    def __init__(self, component_id: str, config: SwitchableSinkConfig) -> None:
        super().__init__(component_id, config)
        self.failing: BaseException | None = None
        self.written: list[Record] = []
        self.attempts = 0

    async def write_batch(self, records: Sequence[Record]) -> None:
        self.attempts += 1
        if self.failing is not None:
            raise self.failing
        self.written.extend(records)


def registry_with_doubles() -> Registry:
    registry = Registry.from_entry_points()
    registry.register("source", "controlled", ControlledSource)
    registry.register("sink", "switchable", SwitchableSink)
    return registry


class ChdbStoreConfig(SinkConfig):
    """A queryable store (chDB) standing in for the ClickHouse sink in `sluice monitor` tests."""

    type: Literal["chdbstore"] = "chdbstore"
    path: str
    database: str = "coinbase_demo"
    table: str = "coinbase_ticker"


class ChdbStore(Sink[ChdbStoreConfig]):
    """Answers queries from a chDB database; records written to it are dropped (the tests seed
    the table themselves)."""

    config_model = ChdbStoreConfig
    description = "test double"

    def __init__(self, component_id: str, config: ChdbStoreConfig) -> None:
        super().__init__(component_id, config)
        self.db: Chdb | None = None
        self.queries: list[str] = []

    async def start(self, ctx: Any) -> None:
        self.db = Chdb(Path(self.config.path))

    async def write_batch(self, records: Sequence[Record]) -> None:
        return None

    async def query(self, sql: str) -> Any:
        from sluice.plugin import QueryResult

        assert self.db is not None
        self.queries.append(sql)
        db = self.db
        text = await asyncio.to_thread(
            lambda: db.session.query(sql, "JSONCompact").bytes().decode()
        )
        body = json.loads(text)
        return QueryResult([c["name"] for c in body["meta"]], body["data"])

    async def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def registry_with_store() -> Registry:
    registry = registry_with_doubles()
    registry.register("sink", "chdbstore", ChdbStore)
    return registry
