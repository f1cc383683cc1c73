"""Advanced Trade messages to records, without a network: the documented messages, the record
shapes, the sequence_num and heartbeat counter checks, dead letters, the JWT and the config."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from sluice.config.loader import load_config_text
from sluice.config.problems import ConfigError
from sluice.metrics import Metrics
from sluice.plugin import ComponentContext
from sluice.registry import Registry
from sluice.runtime.source_worker import count_batch
from sluice.simulator.advanced.protocol import check_jwt
from sluice.sources.coinbase_advanced import CoinbaseAdvancedSource, CoinbaseAdvancedSourceConfig
from sluice.sources.coinbase_advanced.auth import BadKey, Signer
from sluice.sources.coinbase_advanced.protocol import subscribe_request
from tests.conftest import ec_key_pair

TIME = "2023-02-09T20:30:37.167359596Z"


def message(channel: str, number: int, events: list[Any]) -> bytes:
    return orjson.dumps(
        {
            "channel": channel,
            "client_id": "",
            "timestamp": TIME,
            "sequence_num": number,
            "events": events,
        }
    )


TICKER = {
    "type": "ticker",
    "product_id": "BTC-USD",
    "price": "21932.98",
    "volume_24_h": "16038.28770938",
    "low_24_h": "21835.29",
    "high_24_h": "23011.18",
    "low_52_w": "15460",
    "high_52_w": "48240",
    "price_percent_chg_24_h": "-4.15775596190603",
    "best_bid": "21931.98",
    "best_bid_quantity": "8000.21",
    "best_ask": "21933.98",
    "best_ask_quantity": "8038.07770938",
}
TRADE = {
    "trade_id": "000000123",
    "product_id": "ETH-USD",
    "price": "1260.01",
    "size": "0.3",
    "side": "BUY",
    "time": "2019-08-14T20:42:27.265Z",
}


def heartbeat(number: int, counter: int | str) -> bytes:
    event = {"current_time": "2023-06-23 20:31:56 +0000 UTC", "heartbeat_counter": counter}
    return message("heartbeats", number, [event])


def _source(tmp_path: Path, **fields: object) -> tuple[CoinbaseAdvancedSource, Metrics]:
    config = CoinbaseAdvancedSourceConfig.model_validate(
        {"products": ["BTC-USD", "ETH-USD"], **fields}
    )
    source = CoinbaseAdvancedSource("cb", config)
    metrics = Metrics()
    source._ctx = ComponentContext(
        "cb",
        "source",
        "coinbase_advanced",
        tmp_path,
        structlog.get_logger(),
        metrics.component("cb", "source", "coinbase_advanced"),
    )
    source._log = source._ctx.log
    return source, metrics


def _value(metrics: Metrics, name: str) -> float:
    labels = {
        "component_id": "cb",
        "component_kind": "source",
        "component_type": "coinbase_advanced",
    }
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_each_channels_items_become_records_in_the_exchange_shapes(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    l2 = {
        "type": "snapshot",
        "product_id": "BTC-USD",
        "updates": [
            {
                "side": "bid",
                "event_time": "1970-01-01T00:00:00Z",
                "price_level": "21921.73",
                "new_quantity": "0.06317902",
            },
            {
                "side": "offer",
                "event_time": "2023-02-09T20:32:50.714964855Z",
                "price_level": "21921.74",
                "new_quantity": "0",
            },
        ],
    }
    candle = {
        "start": "1688998200",
        "high": "1867.72",
        "low": "1865.63",
        "open": "1867.38",
        "close": "1866.81",
        "volume": "0.20269406",
        "product_id": "ETH-USD",
    }
    frames = [
        message("subscriptions", 0, [{"subscriptions": {"ticker": ["BTC-USD"]}}]),
        message(
            "ticker",
            1,
            [{"type": "snapshot", "tickers": [TICKER, {**TICKER, "product_id": "ETH-USD"}]}],
        ),
        message("market_trades", 2, [{"type": "update", "trades": [TRADE]}]),
        message("l2_data", 3, [l2]),
        message("candles", 4, [{"type": "update", "candles": [candle]}]),
        heartbeat(5, "3049"),
        message("status", 6, [{"type": "snapshot", "products": [{"id": "BTC-USD"}]}]),
    ]
    batch = source._parse(frames)
    assert batch.rejected == []
    kinds = [r.kind for r in batch.records]
    assert kinds == [
        "ticker",
        "ticker",
        "match",
        "book_change",
        "book_change",
        "candle",
        "heartbeat",
        "status",
    ]
    ticker = orjson.loads(batch.records[0].raw)
    assert ticker == {
        "type": "ticker",
        "time": "2023-02-09T20:30:37.167360Z",  # nanoseconds rounded
        "sequence": 1,
        "product_id": "BTC-USD",
        "price": "21932.98",
        "best_bid": "21931.98",
        "best_bid_size": "8000.21",
        "best_ask": "21933.98",
        "best_ask_size": "8038.07770938",
        "volume_24h": "16038.28770938",
        "low_24h": "21835.29",
        "high_24h": "23011.18",
        "low_52w": "15460",
        "high_52w": "48240",
        "price_percent_chg_24h": "-4.15775596190603",
        "channel": "ticker",
        "event": "snapshot",
    }
    trade = orjson.loads(batch.records[2].raw)
    assert trade["trade_id"] == 123 and trade["side"] == "buy" and trade["sequence"] == 2
    assert batch.records[2].time == pytest.approx(1565815347.265)
    bid, offer = (orjson.loads(r.raw) for r in batch.records[3:5])
    assert (bid["side"], bid["time"], bid["snapshot"]) == ("buy", ticker["time"], True)
    assert (offer["side"], offer["size"]) == ("sell", "0")
    assert orjson.loads(batch.records[5].raw)["start"] == "2023-07-10T14:10:00.000000Z"
    assert orjson.loads(batch.records[6].raw)["heartbeat_counter"] == 3049


def test_a_skipped_sequence_num_is_one_gap_record_and_counted(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    frames = [heartbeat(0, 1), heartbeat(1, 2), heartbeat(4, 3), heartbeat(5, 4)]
    batch = source._parse(frames)
    gaps = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap"]
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap["stream"], gap["first_missing"], gap["last_missing"], gap["missed"]) == (
        "sequence_num",
        2,
        3,
        2,
    )
    assert [r.kind for r in batch.records] == [
        "heartbeat",
        "heartbeat",
        "gap",
        "heartbeat",
        "heartbeat",
    ]
    assert _value(metrics, "sluice_source_gaps_total") == 1
    assert _value(metrics, "sluice_source_missed_events_total") == 2


def test_a_repeated_sequence_num_is_an_error_not_a_gap(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    batch = source._parse([heartbeat(0, 1), heartbeat(1, 2), heartbeat(1, 3)])
    assert [r.kind for r in batch.records] == ["heartbeat"] * 3
    assert _value(metrics, "sluice_source_gaps_total") == 0
    value = metrics.registry.get_sample_value(
        "sluice_component_errors_total",
        {
            "component_id": "cb",
            "component_kind": "source",
            "component_type": "coinbase_advanced",
            "error_type": "sequence_num_out_of_order",
        },
    )
    assert value == 1


def test_a_first_message_after_zero_reports_the_numbers_before_it(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    batch = source._parse([heartbeat(3, 1)])
    gap = orjson.loads(batch.records[0].raw)
    assert (gap["first_missing"], gap["last_missing"]) == (0, 2)


def test_a_skipped_heartbeat_counter_is_a_gap_record(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    batch = source._parse([heartbeat(0, 10), heartbeat(1, 11), heartbeat(2, 14)])
    gaps = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap"]
    assert [(g["stream"], g["first_missing"], g["last_missing"]) for g in gaps] == [
        ("heartbeat_counter", 12, 13)
    ]
    assert _value(metrics, "sluice_source_missed_events_total") == 2


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"#garbage", "not valid JSON"),
        (
            message(
                "market_trades",
                0,
                [{"type": "update", "trades": [{**TRADE, "time": "0001-01-01T00:00:00+01:00"}]}],
            ),
            "cannot be turned into records",
        ),
        (
            message(
                "candles",
                0,
                [
                    {
                        "type": "update",
                        "candles": [
                            {
                                "start": "99999999999",
                                "high": "1",
                                "low": "1",
                                "open": "1",
                                "close": "1",
                                "volume": "1",
                                "product_id": "BTC-USD",
                            }
                        ],
                    }
                ],
            ),
            "start",
        ),
        (b'{"channel":"ticker","timestamp":"' + TIME.encode() + b'","events":[]}', "sequence_num"),
        (
            message("market_trades", 0, [{"type": "update", "trades": [{**TRADE, "side": "up"}]}]),
            "$.events[0].trades[0].side",
        ),
        (
            message("ticker", 0, [{"type": "update", "tickers": [{**TICKER, "price": "NaN"}]}]),
            "price is not a finite number",
        ),
        (
            message("ticker", 0, [{"type": "update", "tickers": [{**TICKER, "best_bid": "-inf"}]}]),
            "best_bid is not a finite number",
        ),
        (
            message("heartbeats", 0, [{"current_time": "x", "heartbeat_counter": "x1"}]),
            "heartbeat_counter",
        ),
        (
            b'{"channel":"ticker","sequence_num":0,"timestamp":"2023-01-01T00:00:00","events":[]}',
            "timestamp",
        ),
        (
            b'{"channel":"ticker","sequence_num":0,"timestamp":"2023-01-01T00:00:00Z","events":'
            b'[{"type":"update","tickers":[{"product_id":"\xff","price":"1"}]}]}',
            "UTF-8",
        ),
    ],
)
def test_bad_messages_are_dead_letters_with_their_reason(
    tmp_path: Path, frame: bytes, reason: str
) -> None:
    source, _ = _source(tmp_path)
    batch = source._parse([frame])
    assert batch.records == []
    [rejected] = batch.rejected
    assert rejected.raw == frame
    assert reason in rejected.reason


def test_an_unknown_channel_is_skipped_and_counted_and_an_error_is_logged(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    error = b'{"type":"error","message":"something"}'
    batch = source._parse([message("futures_news", 0, [{"x": 1}]), error])
    assert batch.records == [] and batch.rejected == []
    assert batch.discarded == {"unknown_type": 1}
    assert batch.read_events == 2
    assert source._ctx is not None
    count_batch(source._ctx.metrics, batch)
    discarded = metrics.registry.get_sample_value(
        "sluice_source_discarded_total",
        {
            "component_id": "cb",
            "component_kind": "source",
            "component_type": "coinbase_advanced",
            "reason": "unknown_type",
        },
    )
    assert discarded == 1


def test_one_subscribe_message_per_channel_heartbeats_without_products() -> None:
    assert orjson.loads(subscribe_request("ticker", ["BTC-USD"], None)) == {
        "type": "subscribe",
        "channel": "ticker",
        "product_ids": ["BTC-USD"],
    }
    assert orjson.loads(subscribe_request("heartbeats", ["BTC-USD"], "tok")) == {
        "type": "subscribe",
        "channel": "heartbeats",
        "jwt": "tok",
    }


def test_the_jwt_is_es256_with_the_documented_claims_and_headers() -> None:
    private, public = ec_key_pair()
    name = "organizations/o/apiKeys/k"
    token = Signer(name, private).token(now=1_700_000_000)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == name and len(header["nonce"]) == 32
    claims = jwt.decode(
        token, public, algorithms=["ES256"], options={"verify_exp": False, "verify_nbf": False}
    )
    assert claims == {"iss": "cdp", "sub": name, "nbf": 1_700_000_000, "exp": 1_700_000_120}
    assert check_jwt(Signer(name, private).token(), public) is None
    _, other = ec_key_pair()
    assert "jwt refused" in (check_jwt(Signer(name, private).token(), other) or "")
    assert check_jwt(None, public) == "no jwt"


def test_a_key_that_is_not_p256_is_refused_without_quoting_it() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(BadKey, match="P-256") as info:
        Signer("k", private)
    assert "BEGIN" not in str(info.value)
    with pytest.raises(BadKey, match="not a readable") as info:
        Signer("k", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
    assert "AAAA" not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"channels": ["matches"]}, "channels"),
        ({"channels": ["ticker", "ticker"]}, "more than once"),
        ({"products": ["BTCUSD"]}, "not a product id"),
        ({"url": "http://x"}, "ws://"),
    ],
)
def test_bad_config_is_refused_with_the_reason(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        CoinbaseAdvancedSourceConfig.model_validate({"products": ["BTC-USD"], **fields})


def test_a_private_key_that_is_not_pem_is_named_by_key_and_line_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_TEST_CDP_KEY", "secret-value-not-a-pem")
    text = """
sources:
  cb:
    type: coinbase_advanced
    products: [BTC-USD]
    auth: {name: n, private_key: "${SLUICE_TEST_CDP_KEY}"}
sinks:
  out: {type: stdout, inputs: [cb]}
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, Registry.from_entry_points())
    message = info.value.render()
    assert "private_key" in message and "line 6" in message and "PEM private key" in message
    assert "secret-value" not in message


def test_no_mutated_message_stops_the_source_and_each_is_accounted_for(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    seeds = [
        message("ticker", 0, [{"type": "update", "tickers": [TICKER]}]),
        message("market_trades", 0, [{"type": "update", "trades": [TRADE]}]),
        heartbeat(0, "12"),
        message("subscriptions", 0, [{"subscriptions": {"ticker": ["BTC-USD"]}}]),
    ]
    rng = random.Random(12)
    for n in range(1500):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.choice(
                b'0123456789"{}[],:-.eEnNaIf\\\xff\x00 ab'
            )
        source._sequence = None  # each frame judged on its own, as a connection's first
        batch = source._parse([bytes(frame)])
        # a record, a dead letter, a counted discard, or a control message: never nothing
        control = b'"subscriptions"' in frame or b'"error"' in frame
        skipped = batch.discarded == {"unknown_type": 1}
        assert batch.read_events == 1
        assert batch.records or batch.rejected or skipped or control, (n, bytes(frame))
        assert len(batch.rejected) <= 1
        for record in batch.records:
            orjson.loads(record.raw)  # every record is JSON any reader takes


class _FakeConnection:
    """Replies as given, then nothing (a subscribe timeout)."""

    host = "fake"
    compressed = False

    def __init__(self, replies: list[bytes]) -> None:
        self.sent: list[bytes] = []
        self.replies = replies

    def send(self, message: bytes) -> None:
        self.sent.append(message)

    async def take(self, max_frames: int, wait_secs: float | None) -> list[bytes]:
        if self.replies:
            replies, self.replies = self.replies, []
            return replies
        raise TimeoutError


async def test_a_channel_coinbase_does_not_confirm_is_a_warning_not_a_reconnect(
    tmp_path: Path,
) -> None:
    source, metrics = _source(tmp_path, subscribe_timeout_secs=0.05)
    ack = message("subscriptions", 0, [{"subscriptions": {"heartbeats": ["heartbeats"]}}])
    conn = _FakeConnection([ack])
    received = await source._subscribe(conn)  # type: ignore[arg-type]
    assert received == [ack]
    assert [orjson.loads(m)["channel"] for m in conn.sent] == ["heartbeats", "ticker"]
    errors = metrics.registry.get_sample_value(
        "sluice_component_errors_total",
        {
            "component_id": "cb",
            "component_kind": "source",
            "component_type": "coinbase_advanced",
            "error_type": "subscription_mismatch",
        },
    )
    assert errors == 1


async def test_no_reply_to_the_subscribes_is_a_retriable_error(tmp_path: Path) -> None:
    from sluice.sources.coinbase.client import FeedUnavailable

    source, _ = _source(tmp_path, subscribe_timeout_secs=0.05)
    with pytest.raises(FeedUnavailable, match="no reply to the subscribe requests"):
        await source._subscribe(_FakeConnection([]))  # type: ignore[arg-type]


async def test_an_error_reply_is_a_refusal_that_is_not_retried(tmp_path: Path) -> None:
    from sluice.sources.coinbase.source import SubscriptionRefused

    source, _ = _source(tmp_path)
    conn = _FakeConnection([b'{"type":"error","message":"authentication failure"}'])
    with pytest.raises(SubscriptionRefused, match=r"authentication failure.*set auth"):
        await source._subscribe(conn)  # type: ignore[arg-type]
