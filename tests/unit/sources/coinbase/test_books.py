"""Order books, sequences and signed subscriptions, without a network: the checks, the records,
the resubscribe requests, the signature and the config that turns them on."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import orjson
import pytest
import structlog

from sluice.config import ConfigError
from sluice.config.loader import load_config_text
from sluice.metrics import Metrics
from sluice.plugin import ComponentContext
from sluice.registry import Registry
from sluice.simulator.auth import SimulatedKey, check_signed
from sluice.sources.coinbase import CoinbaseSource, CoinbaseSourceConfig
from sluice.sources.coinbase.auth import ExchangeCredentials, sign, signed_request
from sluice.sources.coinbase.books import Book, Sequences

SECRET = base64.b64encode(b"0123456789abcdef").decode()
AUTH = {"key": "k", "secret": SECRET, "passphrase": "p"}
SNAPSHOT = (
    b'{"type":"snapshot","product_id":"BTC-USD","bids":[["99.00","1.5"],["98.00","2"]],'
    b'"asks":[["101.00","1"],["102.00","3"]],"time":"2026-01-01T00:00:00.000001Z"}'
)
UPDATE = (
    b'{"type":"l2update","product_id":"BTC-USD","time":"2026-01-01T00:00:01.000002Z",'
    b'"changes":[%s]}'
)
RECEIVED = (
    b'{"type":"received","product_id":"BTC-USD","sequence":%d,"order_id":"o","side":"buy",'
    b'"order_type":"limit","size":"1","price":"100","time":"2026-01-01T00:00:02Z"}'
)


class Sent:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def _source(tmp_path: Path, channels: list[str]) -> tuple[CoinbaseSource, Metrics, Sent]:
    config = CoinbaseSourceConfig.model_validate(
        {"products": ["BTC-USD"], "channels": channels, "auth": AUTH}
    )
    source = CoinbaseSource("cb", config)
    metrics = Metrics()
    source._ctx = ComponentContext(
        "cb",
        "source",
        "coinbase",
        tmp_path,
        structlog.get_logger(),
        metrics.component("cb", "source", "coinbase"),
    )
    source._log = source._ctx.log
    sent = Sent()
    source._conn = sent  # type: ignore[assignment]  # only send() is used by the parse
    source._books.reconnected()
    return source, metrics, sent


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    labels = {
        "component_id": "cb",
        "component_kind": "source",
        "component_type": "coinbase",
        **labels,
    }
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_snapshot_and_updates_become_one_level2_record_per_level(tmp_path: Path) -> None:
    source, metrics, sent = _source(tmp_path, ["level2"])
    batch = source._parse([SNAPSHOT, UPDATE % b'["buy","99.50","0.25"],["sell","101.00","0"]'])
    rows = [orjson.loads(r.raw) for r in batch.records]
    assert [r.kind for r in batch.records] == ["level2"] * 6
    assert [(r["side"], r["price"], r["size"], r["snapshot"]) for r in rows] == [
        ("buy", "99.00", "1.5", 1),
        ("buy", "98.00", "2", 1),
        ("sell", "101.00", "1", 1),
        ("sell", "102.00", "3", 1),
        ("buy", "99.50", "0.25", 0),
        ("sell", "101.00", "0", 0),
    ]
    assert rows[4]["time"] == "2026-01-01T00:00:01.000002Z"
    assert batch.records[4].time == pytest.approx(1767225601.000002)
    book = source._books.books["BTC-USD"]
    assert (book.best_bid(), book.best_ask()) == (99.5, 102.0)
    assert sent.frames == [] and batch.rejected == []
    assert _value(metrics, "sluice_source_gaps_total") == 0


def test_a_crossing_update_resubscribes_the_product_and_emits_a_gap(tmp_path: Path) -> None:
    source, metrics, sent = _source(tmp_path, ["level2", "heartbeat"])
    batch = source._parse([SNAPSHOT, UPDATE % b'["buy","101.00","1"]', UPDATE % b'["buy","1","1"]'])
    gaps = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap"]
    assert len(gaps) == 1
    assert gaps[0]["stream"] == "level2" and "crossed book" in gaps[0]["reason"]
    assert gaps[0]["missed"] is None
    # unsubscribe, then subscribe again, signed, for that product on level2 only
    requests = [orjson.loads(f) for f in sent.frames]
    assert [r["type"] for r in requests] == ["unsubscribe", "subscribe"]
    assert requests[1]["channels"] == [{"name": "level2", "product_ids": ["BTC-USD"]}]
    assert all(r["key"] == "k" and r["signature"] for r in requests)
    # the update after the crossing one waits for the fresh snapshot
    assert batch.discarded is not None and batch.discarded["resyncing"] == 1
    assert _value(metrics, "sluice_component_dropped_events_total", reason="resyncing") == 0
    assert _value(metrics, "sluice_source_gaps_total") == 1
    again = source._parse([SNAPSHOT, UPDATE % b'["buy","99.10","1"]'])
    assert [r.kind for r in again.records] == ["level2"] * 5


def test_a_negative_size_is_refused_and_the_book_resynchronised(tmp_path: Path) -> None:
    source, _, sent = _source(tmp_path, ["level2"])
    frame = UPDATE % b'["sell","101.00","-1"]'
    batch = source._parse([SNAPSHOT, frame])
    assert [r.raw for r in batch.rejected] == [frame]
    assert "negative size" in batch.rejected[0].reason
    [gap] = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap"]
    assert "negative size" in gap["reason"]
    assert len(sent.frames) == 2


@pytest.mark.parametrize("value", [b"NaN", b"1e5", b"inf", b"1_0", b"", b" 1"])
def test_a_price_that_is_not_a_plain_decimal_is_a_dead_letter(tmp_path: Path, value: bytes) -> None:
    source, _, _ = _source(tmp_path, ["level2"])
    frame = UPDATE % b'["buy","%s","1"]' % value
    batch = source._parse([SNAPSHOT, frame])
    assert [r.raw for r in batch.rejected] == [frame]


def test_full_sequence_gaps_are_reported_once_and_rebaselined_after_resubscribing(
    tmp_path: Path,
) -> None:
    source, metrics, sent = _source(tmp_path, ["full"])
    batch = source._parse([RECEIVED % 1, RECEIVED % 2, RECEIVED % 5, RECEIVED % 5, RECEIVED % 9])
    kinds = [r.kind for r in batch.records]
    assert kinds.count("full") == 4  # the repeated 5 is dropped
    gaps = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap"]
    assert [
        (g["first_missing_sequence"], g["last_missing_sequence"], g["missed"]) for g in gaps
    ] == [
        (3, 4, 2),
        (6, 8, 3),
    ]
    assert _value(metrics, "sluice_source_missed_events_total") == 5
    assert _value(metrics, "sluice_source_gaps_total") == 2
    # one resubscribe in flight per product
    assert [orjson.loads(f)["type"] for f in sent.frames] == ["unsubscribe", "subscribe"]
    # once the subscribe reply lists the product, its numbers start again: no gap
    reply = b'{"type":"subscriptions","channels":[{"name":"full","product_ids":["BTC-USD"]}]}'
    after = source._parse([reply, RECEIVED % 40, RECEIVED % 41])
    assert [r.kind for r in after.records] == ["full", "full"]


def test_book_heaps_follow_removed_levels() -> None:
    book = Book()
    for price in (1.0, 2.0, 3.0):
        book.set(True, price, "1", False)
        book.set(False, price + 10, "1", False)
    book.set(True, 3.0, "0", True)
    book.set(False, 11.0, "0", True)
    assert (book.best_bid(), book.best_ask()) == (2.0, 12.0)
    assert book.top(2) == ([["2.0", "1"], ["1.0", "1"]], [["12.0", "1"], ["13.0", "1"]])
    book.set(True, 12.0, "1", False)
    assert book.crossed() == (12.0, 12.0)


def test_sequences_accept_the_next_drop_the_old_and_report_the_missed() -> None:
    seq = Sequences()
    assert seq.observe("A", 10) is True
    assert seq.observe("A", 11) is True
    assert seq.observe("A", 11) is False
    assert seq.observe("A", 15) == (12, 14)
    assert seq.observe("A", 16) is True


def test_the_signature_is_the_documented_hmac_and_the_simulator_accepts_it() -> None:
    expected = base64.b64encode(
        hmac.new(
            base64.b64decode(SECRET), b"1700000000GET/users/self/verify", hashlib.sha256
        ).digest()
    ).decode()
    assert sign(SECRET, "1700000000") == expected
    credentials = ExchangeCredentials.model_validate(AUTH)
    request = orjson.loads(signed_request({"type": "subscribe"}, credentials, now=1700000000.5))
    assert request["timestamp"] == "1700000000" and request["signature"] == expected
    key = SimulatedKey("k", SECRET, "p")
    assert check_signed(request, key, now=1700000001) is None
    assert check_signed({**request, "signature": "x"}, key, now=1700000001) == "invalid signature"
    assert check_signed(request, key, now=1700000100) == "request timestamp expired"
    assert "0123" not in repr(credentials) and SECRET not in repr(credentials)


BASE = """
sources:
  cb:
    type: coinbase
    products: [BTC-USD]
{source}
sinks:
  out: {{type: file, path: /tmp/never-written.jsonl, inputs: [cb]}}
"""


def _load(source: str) -> object:
    return load_config_text(BASE.format(source=source), Registry.from_entry_points())


def test_signed_channels_load_with_credentials_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CB_SECRET", SECRET)
    loaded = _load(
        "    channels: [level2, full, user, level2_batch]\n"
        '    auth: {key: k, secret: "${CB_SECRET}", passphrase: p}\n'
        "    book_snapshots: {every_secs: 5, depth: 3}"
    )
    config = loaded.model.sources["cb"]  # type: ignore[attr-defined]
    assert config.auth.secret.get_secret_value() == SECRET
    assert SECRET not in repr(config)


def test_level2_without_auth_is_refused_naming_the_key_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        _load("    channels: [level2]")
    text = info.value.render()
    assert "channels" in text and "line 6" in text and "`auth`" in text


def test_a_secret_that_is_not_base64_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CB_SECRET", "not base64 at all!!")
    with pytest.raises(ConfigError) as info:
        _load('    channels: [full]\n    auth: {key: k, secret: "${CB_SECRET}", passphrase: p}')
    text = info.value.render()
    assert "secret" in text and "not base64" in text
    assert "not base64 at all!!" not in text
    assert "requires an authenticated" not in text  # the auth's own error, not a second one


def test_book_snapshots_give_each_book_top_levels_when_due(tmp_path: Path) -> None:
    config = CoinbaseSourceConfig.model_validate(
        {
            "products": ["BTC-USD"],
            "channels": ["level2"],
            "auth": AUTH,
            "book_snapshots": {"every_secs": 3600, "depth": 1},
        }
    )
    source = CoinbaseSource("cb", config)
    source._ctx = ComponentContext(
        "cb",
        "source",
        "coinbase",
        tmp_path,
        structlog.get_logger(),
        Metrics().component("cb", "source", "coinbase"),
    )
    source._log = source._ctx.log
    source._books.reconnected()
    assert [r.kind for r in source._parse([SNAPSHOT]).records] == ["level2"] * 4  # not due
    source._books._next_snapshot = 0.0
    batch = source._parse([UPDATE % b'["sell","100.50","2"]'])
    [top] = [orjson.loads(r.raw) for r in batch.records if r.kind == "book_snapshot"]
    assert (top["product_id"], top["bids"], top["asks"]) == (
        "BTC-USD",
        [["99.0", "1.5"]],
        [["100.5", "2"]],
    )
    assert source._parse([UPDATE % b'["sell","100.60","2"]']).records[-1].kind == "level2"


@pytest.mark.parametrize("count", [3, 100])  # frame by frame, and the batch screen's numpy pass
def test_a_lowercase_nan_ticker_among_level2_updates_is_a_dead_letter(
    tmp_path: Path, count: int
) -> None:
    # the count of lowercase n is skipped for a batch without a ticker or match tag: here one is
    source, _, _ = _source(tmp_path, ["level2", "ticker"])
    ticker = (
        b'{"type":"ticker","sequence":1,"product_id":"BTC-USD","price":"nan","open_24h":"1.5",'
        b'"time":"2026-01-01T00:00:00Z","trade_id":7}'
    )
    updates = [UPDATE % b'["buy","99.50","%d"]' % n for n in range(1, count - 1)]
    batch = source._parse([SNAPSHOT, *updates[:1], ticker, *updates[1:]])
    assert [r.raw for r in batch.rejected] == [ticker]
    assert "price is not a finite number" in batch.rejected[0].reason
    assert [r.kind for r in batch.records] == ["level2"] * (4 + len(updates))
