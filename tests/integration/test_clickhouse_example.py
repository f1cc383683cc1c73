"""examples/clickhouse_server.yaml, as shipped, moves Coinbase tickers into a real server (the
source pointed at the local simulator: these machines reach no exchange)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.config.loader import load_config_text
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline
from sluice.simulator import CoinbaseSimulator, SimulatorOptions
from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.testing import LocalServer
from tests.integration.support import run_pipeline

EXAMPLE = Path(__file__).parents[2] / "examples" / "clickhouse_server.yaml"


@pytest.fixture
def coinbase_demo(clickhouse_server: LocalServer) -> Iterator[LocalServer]:
    """The server without the example's database, before and after (other tests use it too)."""
    clickhouse_server.query("DROP DATABASE IF EXISTS coinbase_demo")
    yield clickhouse_server
    clickhouse_server.query("DROP DATABASE IF EXISTS coinbase_demo")


@pytest.mark.clickhouse_server
async def test_example_config_writes_tickers_to_the_server(
    coinbase_demo: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = coinbase_demo
    monkeypatch.setenv("CLICKHOUSE_URL", server.url)
    monkeypatch.delenv("CLICKHOUSE_USER", raising=False)
    monkeypatch.delenv("CLICKHOUSE_PASSWORD", raising=False)
    registry = Registry.from_entry_points()
    text = EXAMPLE.read_text() + f"admin: {{enabled: false}}\ndata_dir: {tmp_path}\n"
    loaded = load_config_text(text, registry, source=str(EXAMPLE))
    sink = loaded.sinks["ticks"]
    assert isinstance(sink, ClickHouseSinkConfig)
    assert sink.url == server.url

    simulator = CoinbaseSimulator(
        SimulatorOptions(mode="synthetic", trades_per_sec=400, products=("BTC-USD", "ETH-USD"))
    )
    await simulator.start("127.0.0.1", 0)
    try:
        sources = loaded.model.sources
        sources["coinbase"] = sources["coinbase"].model_copy(update={"url": simulator.url})
        pipeline = Pipeline.build(loaded, registry)
        written = pipeline.sink("ticks")
        assert written is not None
        result = await run_pipeline(
            pipeline, until=lambda: written.metrics.totals()["sent"] >= 300, timeout=60
        )
    finally:
        await simulator.close()
    assert result.ok, result.error
    sent = written.metrics.totals()["sent"]
    rows = server.rows(
        "SELECT product_id, count(), uniqExact(trade_id) FROM coinbase_demo.coinbase_ticker "
        "GROUP BY product_id ORDER BY product_id"
    )
    assert [r[0] for r in rows] == ["BTC-USD", "ETH-USD"]
    assert sum(r[1] for r in rows) == sum(r[2] for r in rows) == sent
