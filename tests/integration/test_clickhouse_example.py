"""examples/clickhouse_server.yaml validates, and its sink section writes to a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from sluice.config.loader import load_config_text
from sluice.config.models import SourceConfig
from sluice.plugin import Source
from sluice.records import SourceBatch
from sluice.runtime.pipeline import Pipeline
from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.testing import LocalServer
from tests.integration.clickhouse_support import ListSource, registry, ticker_record

EXAMPLE = Path(__file__).parents[2] / "examples" / "clickhouse_server.yaml"


class StandInConfig(SourceConfig):
    """Stands in for the coinbase source where it is not installed: the same keys."""

    type: Literal["coinbase"] = "coinbase"
    products: list[str] = Field(description="products")
    channels: list[Any] = Field(description="channels")


class StandIn(Source[StandInConfig]):
    """Replays the test's ticker records under the coinbase source's id."""

    config_model = StandInConfig

    async def batches(self) -> Any:
        yield SourceBatch(ListSource.records["example"])


@pytest.mark.clickhouse_server
async def test_example_config_writes_tickers_to_the_server(
    clickhouse_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = registry()
    if "coinbase" not in found.sources:
        found.register("source", "coinbase", StandIn, origin="tests")
    monkeypatch.setenv("CLICKHOUSE_URL", clickhouse_server.url)
    monkeypatch.delenv("CLICKHOUSE_PASSWORD", raising=False)
    text = EXAMPLE.read_text() + f"admin: {{enabled: false}}\ndata_dir: {tmp_path}\n"
    loaded = load_config_text(text, found, source=str(EXAMPLE))
    sink = loaded.sinks["ticks"]
    assert isinstance(sink, ClickHouseSinkConfig)
    assert sink.url == clickhouse_server.url
    if found.sources["coinbase"] is not StandIn:
        return  # the real source would connect to Coinbase: validating is all we do here
    ListSource.records["example"] = [ticker_record(n) for n in range(1000)]
    result = await asyncio.wait_for(Pipeline.build(loaded, found).run(), timeout=60)
    assert result.ok, result.error
    assert clickhouse_server.rows("SELECT count() FROM coinbase_demo.coinbase_ticker") == [[1000]]
