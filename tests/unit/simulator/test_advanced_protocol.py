"""The simulated Advanced Trade feed's rules, without a socket: what a subscribe may ask, and the
market's Exchange frames as Advanced Trade items."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.simulator.advanced.protocol import (
    envelope,
    l2_updates,
    nanos,
    parse_subscribe,
    ticker_item,
    trade_item,
)

PRODUCTS = ("BTC-USD", "ETH-USD")


@pytest.mark.parametrize(
    ("request_", "answer"),
    [
        ({"type": "subscribe", "channel": "heartbeats"}, ("subscribe", "heartbeats", [])),
        (
            {"type": "unsubscribe", "channel": "ticker", "product_ids": ["BTC-USD"]},
            ("unsubscribe", "ticker", ["BTC-USD"]),
        ),
        ({"type": "subscribe", "channel": "status"}, ("subscribe", "status", [])),
        ({"type": "subscribe", "channels": ["ticker"]}, "names one channel"),
        ({"type": "subscribe", "channel": "level3"}, "level3 is not a valid channel"),
        ({"type": "subscribe", "channel": "ticker"}, "ticker needs product_ids"),
        (
            {"type": "subscribe", "channel": "level2", "product_ids": ["XRP-USD"]},
            "XRP-USD is not a valid product",
        ),
        ({"type": "hello"}, "unknown message type"),
        (["subscribe"], "unknown message type"),
    ],
)
def test_a_subscribe_names_one_known_channel_and_known_products(
    request_: Any, answer: tuple[str, str, list[str]] | str
) -> None:
    result = parse_subscribe(request_, PRODUCTS)
    if isinstance(answer, str):
        assert isinstance(result, str) and answer in result
    else:
        assert result == answer


EXCHANGE_TICKER = {
    "type": "ticker",
    "product_id": "BTC-USD",
    "price": "60100.00",
    "open_24h": "60000.00",
    "volume_24h": "12.5",
    "low_24h": "59000.00",
    "high_24h": "61000.00",
    "best_bid": "60099.99",
    "best_bid_size": "0.5",
    "best_ask": "60100.01",
    "best_ask_size": "0.7",
    "time": "2026-01-01T00:00:00.000001Z",
}


def test_exchange_frames_become_advanced_trade_items() -> None:
    item = ticker_item(EXCHANGE_TICKER)
    assert item["best_bid_quantity"] == "0.5" and item["volume_24_h"] == "12.5"
    assert float(item["price_percent_chg_24_h"]) == pytest.approx(100 / 600, rel=1e-6)
    assert ticker_item(EXCHANGE_TICKER, price="NaN")["price"] == "NaN"
    match = {
        "trade_id": 7,
        "product_id": "BTC-USD",
        "price": "1",
        "size": "2",
        "side": "sell",
        "time": "t",
    }
    assert trade_item(match) == {
        "trade_id": "7",
        "product_id": "BTC-USD",
        "price": "1",
        "size": "2",
        "side": "SELL",
        "time": "t",
    }
    bid, offer = l2_updates(EXCHANGE_TICKER, "now")
    assert (bid["side"], bid["price_level"], bid["new_quantity"]) == ("bid", "60099.99", "0.5")
    assert (offer["side"], offer["price_level"]) == ("offer", "60100.01")


def test_the_envelope_carries_channel_number_and_nanosecond_time() -> None:
    frame = orjson.loads(envelope("l2_data", 4, nanos("2026-01-01T00:00:00.000001Z"), []))
    assert frame == {
        "channel": "l2_data",
        "client_id": "",
        "timestamp": "2026-01-01T00:00:00.000001000Z",
        "sequence_num": 4,
        "events": [],
    }
