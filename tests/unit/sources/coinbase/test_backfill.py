"""The backfiller against the simulator's REST trades endpoint on loopback: pagination by the
CB-AFTER cursor, exactly the missing trades, merge with late websocket trades, trades REST no longer
has, bad REST entries; and the endpoint's own pagination rules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import structlog

from sluice.metrics import Metrics
from sluice.records import Record, Rejected, SourceBatch
from sluice.simulator.rest import RestOptions, RestTrades
from sluice.sources.coinbase.backfill import BackfillConfig, Backfiller
from sluice.sources.coinbase.gaps import Gap
from tests.conftest import wait_until

LOG = structlog.get_logger("test")
PRODUCT = "BTC-USD"


def match(trade_id: int) -> bytes:
    return orjson.dumps(
        {
            "type": "match",
            "trade_id": trade_id,
            "side": "sell",
            "size": "0.5",
            "price": f"{100 + trade_id % 7}.25",
            "product_id": PRODUCT,
            "sequence": trade_id * 3,
            "time": f"2024-01-01T00:{trade_id // 60 % 60:02d}:{trade_id % 60:02d}.123456Z",
        }
    )


@pytest.fixture
async def rest(request: pytest.FixtureRequest) -> AsyncIterator[RestTrades]:
    options = getattr(request, "param", RestOptions())
    server = RestTrades(options, (PRODUCT,), LOG)
    server.add_frames((PRODUCT, match(i)) for i in range(1, 3001))
    await server.start("127.0.0.1")
    yield server
    await server.close()


async def backfilled(rest: RestTrades, *gaps: Gap, claim: list[int] | None = None) -> SourceBatch:
    backfiller = Backfiller(
        BackfillConfig(enabled=True, rest_url=rest.url, delay_secs=0.05, requests_per_sec=10),
        LOG,
        Metrics().component("cb", "source", "coinbase"),
        "sluice/test",
    )
    backfiller.start()
    try:
        for gap in gaps:
            backfiller.gap(gap, "2024-01-01T00:00:00Z")
        for trade_id in claim or []:
            assert backfiller.claim(PRODUCT, trade_id)
        assert not backfiller.claim(PRODUCT, 99_999)
        await wait_until(lambda: backfiller.in_flight == 0 or backfiller.ready)
        records: list[Record] = []
        rejected: list[Rejected] = []
        while backfiller.in_flight:
            await wait_until(lambda: backfiller.ready)
            taken = backfiller.take()
            records += taken.records
            rejected += taken.rejected
        return SourceBatch(records, rejected)
    finally:
        await backfiller.close()


async def test_a_gap_of_2500_trades_is_fetched_in_three_pages_exactly(rest: RestTrades) -> None:
    batch = await backfilled(rest, Gap(PRODUCT, 300, 2799))
    trades = [r for r in batch.records if r.kind == "match"]
    assert [orjson.loads(r.raw)["trade_id"] for r in trades] == list(range(300, 2800))
    assert rest.requests == 3
    first = orjson.loads(trades[-1].raw)
    assert first == {
        "type": "match",
        "backfilled": True,
        "product_id": PRODUCT,
        "trade_id": 2799,
        "side": "sell",
        "size": "0.5",
        "price": orjson.loads(match(2799))["price"],
        "time": orjson.loads(match(2799))["time"],
    }
    [healed] = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap_healed"]
    assert healed["backfilled"] == 2500 and healed["still_missing"] == 0


async def test_trades_that_arrived_late_on_the_websocket_are_not_emitted_again(
    rest: RestTrades,
) -> None:
    batch = await backfilled(rest, Gap(PRODUCT, 10, 19), claim=[12, 15])
    ids = [orjson.loads(r.raw)["trade_id"] for r in batch.records if r.kind == "match"]
    assert sorted(ids) == [10, 11, 13, 14, 16, 17, 18, 19]
    [healed] = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap_healed"]
    assert (healed["backfilled"], healed["websocket"]) == (8, 2)


@pytest.mark.parametrize("rest", [RestOptions(history_trades=1000)], indirect=True)
async def test_trades_older_than_the_rest_history_make_the_gap_unhealable(
    rest: RestTrades,
) -> None:
    batch = await backfilled(rest, Gap(PRODUCT, 1990, 2010))
    ids = [orjson.loads(r.raw)["trade_id"] for r in batch.records if r.kind == "match"]
    assert sorted(ids) == list(range(2001, 2011))  # what REST still has is kept
    [unhealable] = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap_unhealable"]
    assert unhealable["still_missing"] == 11
    assert "REST returned no trade below id 2001" in unhealable["reason"]


async def test_the_endpoint_pages_newest_first_with_coinbase_cursors(rest: RestTrades) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{rest.url}/products/{PRODUCT}/trades"
        async with session.get(url, params={"after": "101", "limit": "3"}) as response:
            page = await response.json()
            assert [t["trade_id"] for t in page] == [100, 99, 98]
            assert (response.headers["CB-BEFORE"], response.headers["CB-AFTER"]) == ("100", "98")
        async with session.get(url, params={"before": "100", "limit": "2"}) as response:
            assert [t["trade_id"] for t in await response.json()] == [102, 101]
        async with session.get(url) as response:
            page = await response.json()
            assert len(page) == 1000 and page[0]["trade_id"] == 3000
        async with session.get(url, params={"limit": "1001"}) as response:
            assert response.status == 400
        async with session.get(f"{rest.url}/products/NOPE-USD/trades") as response:
            assert response.status == 404
            assert await response.json() == {"message": "NotFound"}


async def test_a_rest_trade_that_fails_its_checks_is_a_dead_letter_and_the_gap_stays_open(
    rest: RestTrades,
) -> None:
    bad = orjson.loads(match(3500))
    bad["price"] = "NaN"
    rest.add_frames([(PRODUCT, orjson.dumps(bad)), (PRODUCT, match(3501))])
    batch = await backfilled(rest, Gap(PRODUCT, 3500, 3501))
    assert [orjson.loads(r.raw)["trade_id"] for r in batch.records if r.kind == "match"] == [3501]
    [rejected] = batch.rejected
    assert rejected.reason == "REST trade: price is not a finite number: 'NaN'"
    assert orjson.loads(rejected.raw)["trade_id"] == 3500
    [unhealable] = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap_unhealable"]
    assert unhealable["still_missing"] == 1 and unhealable["backfilled"] == 1


async def test_small_gaps_of_one_product_found_together_cost_one_request(
    rest: RestTrades,
) -> None:
    batch = await backfilled(rest, Gap(PRODUCT, 10, 12), Gap(PRODUCT, 20, 22), Gap(PRODUCT, 40, 40))
    ids = [orjson.loads(r.raw)["trade_id"] for r in batch.records if r.kind == "match"]
    assert sorted(ids) == [10, 11, 12, 20, 21, 22, 40]
    healed = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap_healed"]
    assert [(h["first_missing_trade_id"], h["backfilled"]) for h in healed] == [
        (10, 3),
        (20, 3),
        (40, 1),
    ]
    assert rest.requests == 1
