"""Helpers for the observability tests: the ticker table with a deliberate stop, a pipeline run in
process with its admin server, Prometheus text parsing, and test doubles the test drives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sluice.config import load_config_text
from sluice.config.models import SinkConfig, SourceConfig
from sluice.metrics import Metrics
from sluice.observability.service import Observability
from sluice.plugin import Sink, Source
from sluice.records import Record, SourceBatch
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.sinks.clickhouse.testing import ClickHouseStore

# -- the ticker table with a deliberate stop ---------------------------------------------------------


@dataclass
class SeededTable:
    """A Coinbase ticker table made from the shipped DDL, and what was inserted: row times (unix
    seconds) and the trade-id gaps made on purpose."""

    store: ClickHouseStore
    table: str
    current: bool
    """DateTime64 time (current engines, chDB); False: the legacy table's DateTime (18.16)."""
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

    def now(self) -> int:
        """The engine's clock, unix seconds."""
        [[now]] = self.store.rows("SELECT toUInt32(now())")
        return int(now)

    def insert_now(self, product: str = "BTC-USD", trade_id: int = 99999) -> None:
        """One row with the current time (ingestion resumes)."""
        now = "now64(6)" if self.current else "now()"
        self.store.query(
            f"INSERT INTO {self.table} (time, product_id, sequence, trade_id) "
            f"SELECT {now}, '{product}', 1, {trade_id}"
        )


def seed_ticker(store: ClickHouseStore, table: str, now: float) -> SeededTable:
    """Create ``table`` (``database.table``) as the clickhouse sink does, from the shipped
    sql/coinbase_ticker.sql (sql/coinbase_ticker.legacy.sql on 18.16), and fill it:
    BTC-USD ticks every 10 s from 40 to 26 minutes ago, nothing for 10 minutes, ticks again from
    15 to about 6 minutes ago, then nothing until now (the feed stopped). ETH-USD ticks every 30 s
    in the same two stretches. BTC-USD has two trade-id gaps: 10 trades missed across the stop, 1
    inside the second stretch."""
    database, name = table.split(".")
    store.create_ticker_table(database, name)
    seeded = SeededTable(store, table, store.info().has_datetime64)
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
    # one trade delivered twice, in two messages (the table keeps both: its key holds the
    # sequence): the repeated trade id must not count as a gap
    product, when, trade, _ = rows[5]
    rows.append((product, when + 1, trade, sequence))
    if not seeded.current:  # DateTime holds whole seconds
        rows = [(product, float(int(t)), trade, seq) for product, t, trade, seq in rows]
    to_time = "toDateTime64({:.6f}, 6, 'UTC')" if seeded.current else "toDateTime({:.0f}, 'UTC')"
    values = ",".join(
        f"({to_time.format(t)},'{product}',{seq},{trade},'buy',100.5,0.01,100.4,1.5,100.6,2.5,"
        "99,101,98,1234.5,99999)"
        for product, t, trade, seq in rows
    )
    store.query(
        f"INSERT INTO {table} (time, product_id, sequence, trade_id, side, price, last_size, "
        "best_bid, best_bid_size, best_ask, best_ask_size, open_24h, high_24h, low_24h, "
        f"volume_24h, volume_30d) VALUES {values}"
    )
    for product, when, _trade, _seq in rows:
        seeded.times.append(when)
        seeded.last_time[product] = max(seeded.last_time.get(product, 0.0), when)
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
