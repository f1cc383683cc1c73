"""The simulator speaks the Coinbase protocol to an independent client (`websockets`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sluice.simulator import CoinbaseSimulator, Faults, SimulatorOptions
from sluice.simulator.markets import load_recording


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[CoinbaseSimulator]:
    options = getattr(request, "param", None) or SimulatorOptions(
        mode="synthetic", trades_per_sec=200, heartbeat_interval_secs=0.1
    )
    sim = CoinbaseSimulator(options)
    await sim.start()
    yield sim
    await sim.close()


async def _recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def _subscribe(
    ws: ClientConnection, channels: list[Any], products: list[str] | None = None
) -> dict[str, Any]:
    request: dict[str, Any] = {"type": "subscribe", "channels": channels}
    if products is not None:
        request["product_ids"] = products
    await ws.send(json.dumps(request))
    return await _recv(ws)


async def test_subscribe_is_answered_with_subscriptions_then_snapshot_and_heartbeats(
    simulator: CoinbaseSimulator,
) -> None:
    async with connect(simulator.url) as ws:
        reply = await _subscribe(ws, ["ticker", "heartbeat"], ["BTC-USD", "ETH-USD"])
        assert reply == {
            "type": "subscriptions",
            "channels": [
                {"name": "ticker", "product_ids": ["BTC-USD", "ETH-USD"]},
                {"name": "heartbeat", "product_ids": ["BTC-USD", "ETH-USD"]},
            ],
        }
        first = [await _recv(ws), await _recv(ws)]
        assert [m["type"] for m in first] == ["ticker", "ticker"]
        seen: dict[str, list[int]] = {}
        heartbeats: list[dict[str, Any]] = []
        while len(heartbeats) < 4:
            message = await _recv(ws)
            if message["type"] == "ticker":
                seen.setdefault(message["product_id"], []).append(message["trade_id"])
            elif message["type"] == "heartbeat":
                heartbeats.append(message)
        for ids in seen.values():
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive per product
        assert {h["product_id"] for h in heartbeats} == {"BTC-USD", "ETH-USD"}
        assert all(h["time"].endswith("Z") for h in heartbeats)


async def test_channel_objects_and_status_are_accepted(simulator: CoinbaseSimulator) -> None:
    async with connect(simulator.url) as ws:
        reply = await _subscribe(
            ws, [{"name": "matches", "product_ids": ["SOL-USD"]}, {"name": "status"}]
        )
        assert reply["channels"] == [
            {"name": "matches", "product_ids": ["SOL-USD"]},
            {"name": "status", "product_ids": []},
        ]
        types = {(await _recv(ws))["type"] for _ in range(2)}
        assert types == {"last_match", "status"}


@pytest.mark.parametrize(
    ("channels", "products", "reason"),
    [
        (["tickr"], ["BTC-USD"], "tickr is not a valid channel"),
        (["ticker"], ["FOO-USD"], "FOO-USD is not a valid product"),
        (["level2"], ["BTC-USD"], "require authentication"),
        ([], ["BTC-USD"], "No channels provided"),
        (["ticker"], [], " is not a valid product"),
        (["ticker"], [["BTC-USD"]], "['BTC-USD'] is not a valid product"),  # not a string
    ],
)
async def test_bad_subscriptions_get_an_error_frame_like_coinbase(
    simulator: CoinbaseSimulator, channels: list[str], products: list[Any], reason: str
) -> None:
    async with connect(simulator.url) as ws:
        reply = await _subscribe(ws, channels, products)
        assert reply["type"] == "error"
        assert reply["message"] == "Failed to subscribe"
        assert reason in reply["reason"]


@pytest.mark.parametrize(
    "simulator",
    [SimulatorOptions(mode="synthetic", subscribe_timeout_secs=0.3)],
    indirect=True,
)
async def test_a_client_that_does_not_subscribe_in_time_is_disconnected(
    simulator: CoinbaseSimulator,
) -> None:
    started = time.monotonic()
    async with connect(simulator.url) as ws:
        error = await _recv(ws)
        assert error["type"] == "error"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
    # a lower bound only: the server waited for the subscription (load makes it later, not earlier)
    assert time.monotonic() - started >= 0.3 - 0.01


async def test_deflate_is_negotiated_with_a_client_that_offers_it(
    simulator: CoinbaseSimulator,
) -> None:
    async with connect(simulator.url, compression="deflate") as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
        assert extensions == "permessage-deflate"
        reply = await _subscribe(ws, ["ticker"], ["BTC-USD"])
        assert reply["type"] == "subscriptions"
        for _ in range(20):
            assert (await _recv(ws))["type"] == "ticker"


@pytest.mark.parametrize(
    "simulator",
    [SimulatorOptions(mode="replay", speed=100, loop=True)],
    indirect=True,
)
async def test_replay_loops_with_trade_ids_moved_on(simulator: CoinbaseSimulator) -> None:
    recording = load_recording()
    products = list(recording.products)
    async with connect(simulator.url) as ws:
        await _subscribe(ws, ["ticker"], products)
        ids: dict[str, list[int]] = {}
        per_pass = len(recording.events) + len(recording.initial_tickers)
        tickers = sum(1 for e in recording.events if e.channel == "ticker") + len(
            recording.initial_tickers
        )
        for _ in range(tickers + 20):
            message = await _recv(ws)
            ids.setdefault(message["product_id"], []).append(message["trade_id"])
        assert per_pass > tickers
        for product_ids in ids.values():
            assert product_ids == sorted(set(product_ids))  # rising, no repeats across the loop


@pytest.mark.parametrize(
    "simulator",
    [SimulatorOptions(mode="synthetic", fast=True, fast_count=20_000)],
    indirect=True,
)
async def test_fast_mode_serves_consecutive_tickers_in_bulk(simulator: CoinbaseSimulator) -> None:
    async with connect(simulator.url, compression=None, max_queue=None) as ws:
        await _subscribe(ws, ["ticker"], ["BTC-USD", "ETH-USD"])
        last: dict[str, int] = {}
        for _ in range(20_000):
            message = await _recv(ws)
            product = message["product_id"]
            if product in last:
                assert message["trade_id"] == last[product] + 1
            last[product] = message["trade_id"]
    assert simulator.sessions[0].sent_frames >= 20_000


@pytest.mark.parametrize(
    "simulator",
    [SimulatorOptions(mode="synthetic", trades_per_sec=500, faults=Faults(close_after=5))],
    indirect=True,
)
async def test_close_after_drops_the_connection_without_a_close_frame(
    simulator: CoinbaseSimulator,
) -> None:
    async with connect(simulator.url) as ws:
        await _subscribe(ws, ["ticker"], ["BTC-USD"])
        closed: ConnectionClosed | None = None
        for _ in range(100):
            try:
                await _recv(ws)
            except ConnectionClosed as exc:
                closed = exc
                break
        assert closed is not None
        assert closed.rcvd is None  # no close frame received
