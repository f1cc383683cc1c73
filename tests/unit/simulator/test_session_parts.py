"""The parts a simulator connection is made of, each on its own: the feed's request checks, the
subscription state and the trade-frame faults."""

from __future__ import annotations

import pytest

from sluice.simulator.faults import TradeFaults, fault_after_frame, garbage_due
from sluice.simulator.markets import Event
from sluice.simulator.options import Faults
from sluice.simulator.protocol import AUTH_REASON, parse_channels
from sluice.simulator.subscriptions import Subscriptions

PRODUCTS = ("BTC-USD", "ETH-USD")


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ({"channels": []}, "No channels provided"),
        ({"channels": [7]}, "Malformed channel"),
        ({"channels": ["level2"], "product_ids": ["BTC-USD"]}, AUTH_REASON),
        ({"channels": ["candles"], "product_ids": ["BTC-USD"]}, "candles is not a valid channel"),
        ({"channels": ["ticker"]}, " is not a valid product"),
        ({"channels": ["ticker"], "product_ids": ["XX-YY"]}, "XX-YY is not a valid product"),
    ],
)
def test_a_request_the_feed_refuses_gets_its_reason(
    request_: dict[str, object], reason: str
) -> None:
    assert parse_channels(request_, PRODUCTS) == ({}, reason)


def test_channel_names_take_the_top_level_products_and_objects_their_own() -> None:
    request = {
        "product_ids": ["BTC-USD"],
        "channels": ["ticker", {"name": "matches", "product_ids": ["ETH-USD"]}, "status"],
    }
    assert parse_channels(request, PRODUCTS) == (
        {"ticker": ["BTC-USD"], "matches": ["ETH-USD"], "status": []},
        None,
    )


def test_subscriptions_merge_and_unsubscribing_the_last_product_drops_the_channel() -> None:
    subscriptions = Subscriptions()
    subscriptions.subscribe({"ticker": ["BTC-USD"], "ticker_batch": ["ETH-USD"]})
    subscriptions.subscribe({"ticker": ["BTC-USD", "ETH-USD"], "status": []})
    assert subscriptions.channels == {
        "ticker": ["BTC-USD", "ETH-USD"],
        "ticker_batch": ["ETH-USD"],
        "status": [],
    }
    assert subscriptions.tickers == {"BTC-USD", "ETH-USD"}
    subscriptions.unsubscribe({"ticker": ["BTC-USD", "ETH-USD"], "status": []})
    assert subscriptions.channels == {"ticker_batch": ["ETH-USD"]}
    assert subscriptions.tickers == {"ETH-USD"}
    assert subscriptions.matches == frozenset()


def events(count: int) -> list[Event]:
    return [Event("BTC-USD", "ticker", b"frame-%d" % n, n, n) for n in range(1, count + 1)]


def test_trade_faults_skip_reorder_truncate_and_repeat_in_that_order() -> None:
    sent: list[bytes] = []
    faults = TradeFaults(Faults(skip_every=5, reorder_every=3), record_skipped=True)
    for event in events(7):
        faults.send(event, live=True, send=sent.append)
    assert sent == [b"frame-1", b"frame-2", b"frame-4", b"frame-3", b"frame-7", b"frame-6"]
    assert faults.skipped == [b"frame-5"]
    assert faults.count == 7

    sent.clear()
    faults = TradeFaults(Faults(truncate_every=2, repeat_every=3), record_skipped=False)
    for event in events(3):
        faults.send(event, live=True, send=sent.append)
    assert sent == [b"frame-1", b"fra", b"frame-3", b"frame-3"]
    assert faults.skipped is None


def test_a_frame_fault_comes_once_its_count_or_backlog_is_reached() -> None:
    faults = Faults(garbage_every=2, close_after=10, stall_after=5, slow_consumer_bytes=100)
    assert [garbage_due(faults, n) for n in (1, 2, 3, 4)] == [False, True, False, True]
    assert not garbage_due(Faults(), 2)
    assert fault_after_frame(faults, 4, lambda: 0) is None
    assert fault_after_frame(faults, 5, lambda: 0) == "stall_after"
    assert fault_after_frame(faults, 10, lambda: 0) == "close_after"
    assert fault_after_frame(faults, 1, lambda: 101) == "slow_consumer"
    assert fault_after_frame(Faults(), 10**6, lambda: 10**9) is None
