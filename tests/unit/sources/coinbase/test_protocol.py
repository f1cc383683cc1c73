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
    may_hold_decimals,
    screen,
    subscribe_request,
    suspect,
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
    assert _reason(b'{"type":"rfq_match","product_id":"BTC-USD","changes":[]}') is None
    assert _reason(b'{"type":"something_new"}') is None


def test_subscribe_request_uses_channel_objects() -> None:
    request = orjson.loads(subscribe_request({"ticker": ["BTC-USD"], "status": []}))
    assert request == {
        "type": "subscribe",
        "channels": [{"name": "ticker", "product_ids": ["BTC-USD"]}, {"name": "status"}],
    }


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not valid UTF-8"),
        (MemoryError(), "cannot be decoded: MemoryError"),
    ],
)
def test_classify_names_any_decode_failure_and_never_raises(
    error: BaseException, words: str
) -> None:
    deep = b'{"type":' + b"[" * 100_000
    assert words in (classify(deep, error) or "")


def test_classify_survives_a_frame_too_deep_for_its_own_type_probe() -> None:
    frame = b'{"type":"ticker","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    error = msgspec.ValidationError("Object missing required field `product_id`")
    reason = classify(frame, error)
    assert reason is not None
    assert "does not match the Coinbase message spec" in reason


def test_ids_fit_a_signed_64_bit_integer() -> None:
    top = TICKER_2021.replace(b'"trade_id":881613', b'"trade_id":9223372036854775807')
    ticker = decode(top)
    assert isinstance(ticker, Ticker)
    assert ticker.trade_id == 2**63 - 1
    for bad in (b"9223372036854775808", b"-1", b"18446744073709551616"):
        frame = TICKER_2021.replace(b'"trade_id":881613', b'"trade_id":' + bad)
        assert "$.trade_id" in (_reason(frame) or "")
    negative_sequence = TICKER_2021.replace(b'"sequence":333938798', b'"sequence":-5')
    assert "$.sequence" in (_reason(negative_sequence) or "")
    heartbeat = (
        b'{"type":"heartbeat","last_trade_id":-1,"product_id":"BTC-USD","sequence":1,'
        b'"time":"2026-01-01T00:00:02Z"}'
    )
    assert "$.last_trade_id" in (_reason(heartbeat) or "")


def test_screen_refuses_non_finite_decimals_and_bad_text_and_passes_the_rest() -> None:
    ticker = decode(TICKER_2021)
    assert screen(TICKER_2021, ticker) is None
    for value in ("NaN", "nan", "-Infinity", "+inf", "sNaN", " NaN "):
        frame = TICKER_2021.replace(b'"14.7775"', b'"' + value.encode() + b'"')
        assert screen(frame, decode(frame)) == f"price is not a finite number: {value!r}"
    for value in ("1e999999", "not a number", ""):  # finite or not numbers: the sink judges
        frame = TICKER_2021.replace(b'"14.7775"', b'"' + value.encode() + b'"')
        assert screen(frame, decode(frame)) is None
    bad_text = TICKER_2021.replace(b'"side"', b'"note":"\xed\xa0\x80","side"')
    assert "not valid JSON text" in (screen(bad_text, decode(bad_text)) or "")
    assert not suspect(TICKER_2021, ticker)
    for value in ("NAN", "inf", "Infinity", "-nan"):
        frame = TICKER_2021.replace(b'"0.04"', b'"' + value.encode() + b'"')
        assert suspect(frame, decode(frame))
    for extra in (b'"\\u0041"', '"é"'.encode(), b'"a\\nb"', b"\n1", b"\r\n1"):
        frame = TICKER_2021.replace(b'"side"', b'"note":' + extra + b',"side"')
        assert suspect(frame, decode(frame)), extra
    # a product id or field name with an N is no reason to look closer
    frame = TICKER_2021.replace(b"BAND-GBP", b"NU-GBP").replace(b'"side"', b'"Note":1,"side"')
    assert not suspect(frame, decode(frame))


def test_screen_refuses_nesting_past_the_json_readers_limit_whatever_msgspec_did() -> None:
    deep = b'{"type":"heartbeat","x":' + b"[" * 1025 + b"]" * 1025 + b"}"
    assert "depth limit exceeded" in (screen(deep, object()) or "")
    assert suspect(deep, object())
    wide = b'{"type":"status","x":[' + b",".join([b"{}"] * 1500) + b"]}"
    assert screen(wide, object()) is None


def test_only_a_batch_with_a_k_may_hold_a_frame_with_decimal_fields() -> None:
    # the smallest frame of each spec with decimal fields: only its tag and required keys
    smallest = [
        b'{"type":"ticker","product_id":"A","sequence":1,"time":"2026-01-01T00:00:00Z",'
        b'"trade_id":1,"price":"1"}',
        b'{"type":"match","product_id":"A","trade_id":1,"sequence":1,"maker_order_id":"o",'
        b'"taker_order_id":"o","side":"buy","size":"1","price":"1","time":"2026-01-01T00:00:00Z"}',
    ]
    smallest.append(smallest[1].replace(b'"match"', b'"last_match"'))
    for frame in smallest:
        assert type(decode(frame)) in (Ticker, Match, LastMatch)
        assert may_hold_decimals(b"".join([b'{"type":"heartbeat"}', frame]))
    level2 = (
        b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","999.96","1.09"]],'
        b'"time":"2026-11-29T22:22:13.084059Z"}'
    )
    assert not may_hold_decimals(level2 * 100)


def test_nan_free_tells_a_batch_without_nan_from_one_that_may_hold_it() -> None:
    from decimal import Decimal

    from sluice.sources.coinbase.protocol import nan_free

    # keys with an n (sequence, open_24h: an n, an underscore, a digit) are no NaN
    assert nan_free(b'{"sequence":1,"open_24h":"1.5","volume_24h":"2"}{"price":"n"}')
    for spelling in ("nan", "nA", "n_an", "n__a_n", "s_nan", "-nan5", " nan "):
        assert not nan_free(b'{"sequence":1,"price":"%s"}' % spelling.encode()), spelling
    # every spelling Decimal reads as NaN without an N has an n before a, A or _
    for spelling in ("nan", "n_an", "na_n", "_nan", "snan", "nAn"):
        assert Decimal(spelling).is_nan()
