"""The simulated order books on their own: signed channels, snapshots and updates that never
cross, contiguous full-channel sequences, and the two book faults."""

from __future__ import annotations

import orjson

from sluice.simulator.books import BookMarket, BookStream
from sluice.simulator.options import Faults
from sluice.simulator.protocol import AUTH_REASON, parse_channels

PRODUCTS = ("BTC-USD", "ETH-USD")


def test_signed_requests_get_level2_full_and_user_and_unsigned_ones_the_exchange_reason() -> None:
    request = {"channels": ["level2", "full", "user"], "product_ids": ["BTC-USD"]}
    assert parse_channels(request, PRODUCTS) == ({}, AUTH_REASON)
    wanted, reason = parse_channels(request, PRODUCTS, signed=True)
    assert reason is None and set(wanted) == {"level2", "full", "user"}
    assert (
        parse_channels({"channels": ["level2_batch"], "product_ids": ["BTC-USD"]}, PRODUCTS)[1]
        is None
    )
    assert (
        parse_channels({"channels": ["level3"], "product_ids": ["BTC-USD"]}, PRODUCTS, True)[1]
        == AUTH_REASON
    )


def test_updates_never_cross_and_full_sequences_are_contiguous_per_product() -> None:
    market = BookMarket(PRODUCTS, updates_per_sec=1.0)
    last: dict[str, int] = {}
    for _ in range(2000):
        for event in market.step(1767225600.0):
            if event.channel == "full":
                if event.product_id in last:
                    assert event.sequence == last[event.product_id] + 1
                last[event.product_id] = event.sequence
                assert orjson.loads(event.frame)["sequence"] == event.sequence
    for book in market.books.values():
        assert max(map(float, book.bids)) < min(map(float, book.asks))


def test_book_faults_skip_sequences_and_cross_the_book() -> None:
    market = BookMarket(PRODUCTS, updates_per_sec=1.0)
    stream = BookStream(Faults(skip_sequence_every=4, cross_book_every=5), record=False)
    sent: list[bytes] = []
    channels = {"level2": ["BTC-USD"], "full": ["BTC-USD"]}
    stream.subscribed(channels, market, 0.0, sent.append)
    assert orjson.loads(sent[0])["type"] == "snapshot"
    for _ in range(40):
        stream.on_events(
            market.step(1767225600.0), channels, market, 0.0, sent.append, lambda: True
        )
    assert stream.updates == 20 and stream.full == 20  # BTC-USD only: every other step
    assert len(stream.skipped) == 5 and len(stream.crossed) == 4
    crossing = [orjson.loads(f) for f in sent if b'"1.00000000"]]' in f and b'"buy"' in f]
    asks_side = market.books["BTC-USD"].mid  # every ask is above the mid, every bid below
    assert len(crossing) == 4
    assert all(float(c["changes"][0][1]) > asks_side for c in crossing)  # a bid among the asks
    sequences = [orjson.loads(f)["sequence"] for f in sent if b'"sequence"' in f]
    assert {s for _, s in stream.skipped}.isdisjoint(sequences)
