"""The message specs: what is accepted, what is rejected and why, what is skipped."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import orjson
import pytest

from sluice.simulator.markets import load_recording
from sluice.sources.coinbase.protocol import (
    Error,
    Heartbeat,
    LastMatch,
    Match,
    Status,
    Subscriptions,
    Ticker,
    classify,
    decode,
    subscribe_request,
)

TICKER_2021 = (
    b'{"type":"ticker","sequence":333938798,"product_id":"BAND-GBP","price":"14.7775",'
    b'"open_24h":"14.6647","volume_24h":"94381.28000000","low_24h":"14.3691","high_24h":"16.55",'
    b'"volume_30d":"2295579.57000000","best_bid":"14.7550","best_ask":"14.8060","side":"buy",'
    b'"time":"2021-04-17T16:43:30.244075Z","trade_id":881613,"last_size":"0.04"}'
)


def _reason(frame: bytes) -> str | None:
    try:
        decode(frame)
    except msgspec.MsgspecError as exc:
        return classify(frame, exc)
    raise AssertionError("the frame was accepted")


def test_ticker_without_best_sizes_decodes_with_time_as_utc_microseconds() -> None:
    ticker = decode(TICKER_2021)
    assert isinstance(ticker, Ticker)
    assert ticker.time == datetime(2021, 4, 17, 16, 43, 30, 244075, tzinfo=UTC)
    assert ticker.best_bid_size is None
    assert ticker.best_ask_size is None
    assert ticker.price == "14.7775"  # exact decimal text, not a float
    assert ticker.volume_24h == "94381.28000000"


def test_ticker_with_best_sizes_keeps_them_as_text() -> None:
    frame = TICKER_2021.replace(b'"side"', b'"best_bid_size":"0.10000000","side"')
    ticker = decode(frame)
    assert isinstance(ticker, Ticker)
    assert ticker.best_bid_size == "0.10000000"


def test_every_recorded_ticker_and_match_matches_its_spec() -> None:
    recording = load_recording()
    frames = [e.frame for e in recording.events]
    frames += list(recording.initial_tickers.values())
    kinds = {type(decode(f)) for f in frames}
    assert kinds == {Ticker, Match}


def test_last_match_is_its_own_type_with_the_match_fields() -> None:
    frame = next(iter(load_recording().initial_matches.values()))
    message = decode(frame.replace(b'"type":"match"', b'"type":"last_match"'))
    assert isinstance(message, LastMatch)
    assert isinstance(message, Match)


def test_heartbeat_subscriptions_error_status_decode() -> None:
    heartbeat = decode(
        b'{"type":"heartbeat","last_trade_id":846151689,"product_id":"ETH-USD",'
        b'"sequence":103492701094,"time":"2026-09-30T02:03:22.000000Z"}'
    )
    assert isinstance(heartbeat, Heartbeat)
    assert heartbeat.last_trade_id == 846151689
    reply = decode(b'{"type":"subscriptions","channels":[{"name":"ticker","product_ids":["A-B"]}]}')
    assert isinstance(reply, Subscriptions)
    assert reply.channels[0].product_ids == ["A-B"]
    error = decode(b'{"type":"error","message":"Failed to subscribe","reason":"x"}')
    assert isinstance(error, Error)
    assert error.reason == "x"
    status = decode(b'{"type":"status","products":[],"currencies":[]}')
    assert isinstance(status, Status)


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (TICKER_2021.replace(b'"price":"14.7775",', b""), ["price"]),
        (TICKER_2021.replace(b'"price":"14.7775"', b'"price":14.7775'), ["str", "price"]),
        (TICKER_2021.replace(b'"trade_id":881613', b'"trade_id":"x"'), ["int", "trade_id"]),
        (TICKER_2021.replace(b"30.244075Z", b"30.244075"), ["time"]),
        (TICKER_2021.replace(b'"side":"buy"', b'"side":"up"'), ["side"]),
        (TICKER_2021[:100], ["not valid JSON"]),
        (b"#garbage", ["not valid JSON"]),
        (b'{"product_id":"BTC-USD"}', ["type"]),
        (b'["ticker"]', ["spec"]),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(frame: bytes, words: list[str]) -> None:
    reason = _reason(frame)
    assert reason is not None
    for word in words:
        assert word in reason


def test_an_unknown_type_is_told_apart_from_a_malformed_frame() -> None:
    assert _reason(b'{"type":"l2update","product_id":"BTC-USD","changes":[]}') is None
    assert _reason(b'{"type":"something_new"}') is None


def test_subscribe_request_uses_channel_objects() -> None:
    request = orjson.loads(subscribe_request({"ticker": ["BTC-USD"], "status": []}))
    assert request == {
        "type": "subscribe",
        "channels": [{"name": "ticker", "product_ids": ["BTC-USD"]}, {"name": "status"}],
    }
