"""Frames to records, without a network: kinds, exact bytes, dead letters, duplicates, gaps."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import structlog

from sluice.metrics import Metrics
from sluice.plugin import ComponentContext
from sluice.records import SourceBatch
from sluice.runtime.source_worker import count_batch
from sluice.sources.coinbase import CoinbaseSource, CoinbaseSourceConfig
from sluice.sources.coinbase.protocol import Error
from sluice.sources.coinbase.source import SubscriptionRefused

TICKER = (
    b'{"type":"ticker","sequence":%d,"product_id":"BTC-USD","price":"60000.01",'
    b'"time":"2026-01-01T00:00:00.000001Z","trade_id":%d}'
)
MATCH = (
    b'{"type":"match","trade_id":%d,"maker_order_id":"m","taker_order_id":"t","side":"buy",'
    b'"size":"0.1","price":"1.5","product_id":"BTC-USD","sequence":%d,'
    b'"time":"2026-01-01T00:00:01Z"}'
)
HEARTBEAT = (
    b'{"type":"heartbeat","last_trade_id":%d,"product_id":"BTC-USD","sequence":1,'
    b'"time":"2026-01-01T00:00:02Z"}'
)


def _source(tmp_path: Path, **fields: object) -> tuple[CoinbaseSource, Metrics]:
    config = CoinbaseSourceConfig.model_validate({"products": ["BTC-USD"], **fields})
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
    return source, metrics


def _parse(source: CoinbaseSource, frames: list[bytes]) -> SourceBatch:
    """The frames parsed as the source does, and the batch counted as the source worker does."""
    batch = source._parse(frames)
    assert source._ctx is not None
    count_batch(source._ctx.metrics, batch)
    return batch


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(
        name,
        {"component_id": "cb", "component_kind": "source", "component_type": "coinbase", **labels},
    )
    return value or 0.0


def test_records_keep_the_frame_bytes_kind_and_event_time(tmp_path: Path) -> None:
    source, _ = _source(tmp_path, channels=["ticker", "heartbeat", "matches"])
    frames = [TICKER % (1, 10), MATCH % (10, 1), HEARTBEAT % 10]
    batch = _parse(source, frames)
    assert [r.raw for r in batch.records] == frames
    assert [r.kind for r in batch.records] == ["ticker", "match", "heartbeat"]
    assert batch.records[0].time == pytest.approx(1767225600.000001)
    assert batch.rejected == []


def test_malformed_frames_are_rejected_and_unknown_types_skipped(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    batch = _parse(
        source, [b"not json", b'{"type":"ticker"}', b'{"type":"rfq_match"}', TICKER % (1, 1)]
    )
    assert [r.raw for r in batch.rejected] == [b"not json", b'{"type":"ticker"}']
    assert "not valid JSON" in batch.rejected[0].reason
    assert "product_id" in batch.rejected[1].reason
    assert len(batch.records) == 1
    assert _value(metrics, "sluice_source_discarded_total", reason="unknown_type") == 1


def test_duplicates_are_discarded_and_a_jump_emits_a_gap_record(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    batch = _parse(source, [TICKER % (1, 10), TICKER % (2, 10), TICKER % (3, 9), TICKER % (4, 14)])
    kinds = [r.kind for r in batch.records]
    assert kinds == ["ticker", "gap", "ticker"]
    gap = orjson.loads(batch.records[1].raw)
    assert gap["product_id"] == "BTC-USD"
    assert (gap["first_missing_trade_id"], gap["last_missing_trade_id"], gap["missed"]) == (
        11,
        13,
        3,
    )
    assert gap["stream"] == "ticker"
    assert gap["detected_at"].endswith("Z")
    assert _value(metrics, "sluice_source_discarded_total", reason="duplicate") == 1
    assert _value(metrics, "sluice_source_discarded_total", reason="out_of_order") == 1
    assert _value(metrics, "sluice_source_gaps_total") == 1
    assert _value(metrics, "sluice_source_missed_events_total") == 3


def test_with_matches_subscribed_gaps_follow_matches_not_tickers(tmp_path: Path) -> None:
    source, _metrics = _source(tmp_path, channels=["ticker", "matches"])
    batch = _parse(source, [TICKER % (1, 10), TICKER % (2, 20), MATCH % (10, 1), MATCH % (12, 2)])
    gaps = [orjson.loads(r.raw) for r in batch.records if r.kind == "gap"]
    assert [(g["stream"], g["first_missing_trade_id"]) for g in gaps] == [("matches", 11)]


def test_a_refused_subscription_is_fatal_and_auth_is_named(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    with pytest.raises(SubscriptionRefused, match="requires authentication"):
        source._refused(
            Error(
                "Failed to subscribe",
                "level2, level3, and full channels now require authentication.",
            )
        )
    with pytest.raises(SubscriptionRefused, match="FOO-USD is not a valid product"):
        source._refused(Error("Failed to subscribe", "FOO-USD is not a valid product"))
    assert _value(metrics, "sluice_component_errors_total", error_type="coinbase_error") == 2


def _ticker(trade_id: bytes = b"1", price: bytes = b'"60000.01"', extra: bytes = b"") -> bytes:
    return (
        b'{"type":"ticker","sequence":1,"product_id":"BTC-USD","price":%s,'
        b'"time":"2026-01-01T00:00:00Z","trade_id":%s%s}' % (price, trade_id, extra)
    )


HOSTILE = [
    (b'{"type":"ticker","x":' + b"[" * 1000 + b"]" * 1000 + b"}", "nested too deeply"),
    (b'{"a":' * 1000 + b"1" + b"}" * 1000, "nested too deeply"),
    (b'{"type":"ticker","product_id":"\xff\xfe"}', "not valid UTF-8"),
    (_ticker(extra=b',"note":"\xc3\x28"'), "not valid JSON text"),
    (_ticker(extra=b',"note":"\\ud800"'), "not valid JSON"),
    (_ticker(b"1000000000000000000000"), "$.trade_id"),
    (_ticker(b"9223372036854775808"), "<= 9223372036854775807"),
    (_ticker(b"18446744073709551616"), "$.trade_id"),
    (_ticker(b"-1"), ">= 0"),
    (_ticker(b"1e400"), "$.trade_id"),
    (_ticker(price=b'"NaN"'), "price is not a finite number"),
    (_ticker(price=b'"-Infinity"'), "price is not a finite number"),
    (_ticker(price=b'"inf"'), "price is not a finite number"),
    (_ticker(price=b'"\\u004eaN"'), "price is not a finite number"),
    (_ticker(extra=b',"best_ask_size":"sNaN"'), "best_ask_size is not a finite number"),
    (b"\x00\x01\x02", "not valid JSON"),
]


@pytest.mark.parametrize(("frame", "words"), HOSTILE)
def test_a_hostile_frame_is_a_dead_letter_with_its_reason(
    tmp_path: Path, frame: bytes, words: str
) -> None:
    source, metrics = _source(tmp_path)
    good = _ticker(b"7")
    batch = _parse(source, [frame, good])
    assert [r.raw for r in batch.rejected] == [frame]
    assert words in batch.rejected[0].reason
    assert [r.raw for r in batch.records] == [good]
    assert _value(metrics, "sluice_component_received_events_total") == 2


def test_frames_that_merely_look_suspect_are_records(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    frames = [
        _ticker(b"1", extra=b',"note":"infinite nanny \\"quoted\\" caf\xc3\xa9"'),
        _ticker(b"2", price=b'"1e-8"'),
    ]
    batch = _parse(source, frames)
    assert batch.rejected == []
    assert [r.raw for r in batch.records] == frames
    assert batch.records[0].data["note"] == 'infinite nanny "quoted" café'


LOWERCASE_NAN = [b"nan", b"n_an", b"na_n", b"_n_a_n_", b"snan", b"+nan", b" nan ", b"nan12"]


@pytest.mark.parametrize("value", LOWERCASE_NAN)
def test_a_lowercase_nan_in_a_batch_of_plain_frames_is_a_dead_letter(
    tmp_path: Path, value: bytes
) -> None:
    # no escape, no N, f or F anywhere in the batch: the batch test passes and only the count of
    # lowercase n can find it (a ticker's keys spell two: sequence and open_24h)
    source, _ = _source(tmp_path)
    frame = _ticker(b"2", price=b'"%s"' % value, extra=b',"open_24h":"1.5"')
    batch = _parse(source, [_ticker(b"1"), frame, _ticker(b"3")])
    assert [r.raw for r in batch.rejected] == [frame]
    assert "price is not a finite number" in batch.rejected[0].reason
    tickers = [r for r in batch.records if r.kind == "ticker"]
    assert [orjson.loads(r.raw)["trade_id"] for r in tickers] == [1, 3]


def test_the_batch_screen_refuses_exactly_what_screen_refuses(tmp_path: Path) -> None:
    from decimal import Decimal

    from sluice.sources.coinbase.protocol import decode, screen

    rng = random.Random(20261129)
    spellings = [*LOWERCASE_NAN, b"NaN", b"Inf", b"inf", b"iNf", b"in_f_inity", b"-Infinity"]
    spellings += [b"sNaN", b"1.5", b"1e5", b"1_0", b"n", b"nn", b"open_24h", b"abc", b""]
    alphabet = b"nNaAsSiIfFtTyY_0123456789.eE+- "
    fields = [b"open_24h", b"volume_24h", b"low_24h", b"best_bid", b"best_ask", b"last_size"]
    frames: list[bytes] = []
    for trade_id in range(1, 2001):
        if rng.random() < 0.5:
            value = rng.choice(spellings)
        else:
            value = bytes(rng.choices(alphabet, k=rng.randint(1, 8)))
        extra = b"".join(
            b',"%s":"%s"' % (name, rng.choice(spellings) if rng.random() < 0.2 else b"1.25")
            for name in rng.sample(fields, rng.randint(0, len(fields)))
        )
        frames.append(_ticker(b"%d" % trade_id, price=b'"%s"' % value, extra=extra))
    refused = {frame for frame in frames if screen(frame, decode(frame)) is not None}
    assert 100 < len(refused) < len(frames) - 100  # both kinds, many of each
    # batches with no N, f or F at all (only the count of n can tell), and the others
    unlettered = [f for f in frames if not any(letter in f for letter in (b"N", b"f", b"F"))]
    lettered = [f for f in frames if f not in set(unlettered)]
    assert any(f in refused for f in unlettered)
    source, _ = _source(tmp_path)
    got: set[bytes] = set()
    for group in (unlettered, lettered):
        for start in range(0, len(group), 100):
            got |= {r.raw for r in _parse(source, group[start : start + 100]).rejected}
    assert got == refused
    assert Decimal("n_a_n").is_nan()  # why underscores are in the spellings


def test_an_oversize_placeholder_is_a_dead_letter_with_its_size(tmp_path: Path) -> None:
    from sluice.sources.coinbase.client import Oversize

    source, _ = _source(tmp_path)
    batch = _parse(source, [Oversize.of(5_000_000, b'{"type":"status"' + b"x" * 9000, 4096)])
    assert len(batch.rejected) == 1
    assert batch.rejected[0].raw == (b'{"type":"status"' + b"x" * 9000)[:4096]
    assert batch.rejected[0].reason == (
        "frame of 5000000 bytes is over max_frame_bytes (4096); its first 4096 bytes are kept"
    )


def test_a_product_is_re_baselined_not_silenced_and_the_log_and_metric_say_so(
    tmp_path: Path,
) -> None:
    source, metrics = _source(tmp_path, rebaseline_after=3)
    with structlog.testing.capture_logs() as logs:
        batch = _parse(source, [TICKER % (1, n) for n in (100, 5, 6, 7, 8)])
    assert [orjson.loads(r.raw)["trade_id"] for r in batch.records] == [100, 7, 8]
    moved = [e for e in logs if e["event"] == "coinbase.trade_ids_rebaselined"]
    assert len(moved) == 1
    assert moved[0]["old_baseline"] == 100
    assert moved[0]["new_baseline"] == 7
    assert moved[0]["dropped_out_of_order"] == 2
    assert moved[0]["product_id"] == "BTC-USD"
    assert _value(metrics, "sluice_source_rebaselines_total") == 1
    assert _value(metrics, "sluice_source_discarded_total", reason="out_of_order") == 2


def test_line_breaks_between_tokens_are_folded_so_a_record_is_one_line(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    frame = b'{\r\n  "type": "ticker",\n' + _ticker(b"3")[1:]
    batch = _parse(source, [frame])
    assert batch.rejected == []
    [record] = batch.records
    assert record.raw == frame.replace(b"\r", b" ").replace(b"\n", b" ")
    assert record.data == orjson.loads(frame)


def test_a_frame_nested_past_the_json_readers_limit_is_a_dead_letter(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    # msgspec may skip it (depending on the stack), orjson and the sinks after it would not
    frame = _ticker(b"4", extra=b',"x":' + b"[" * 1025 + b"]" * 1025)
    ok = _ticker(b"5", extra=b',"x":' + b"[" * 500 + b"]" * 500)
    batch = _parse(source, [frame, ok])
    assert [r.raw for r in batch.rejected] == [frame]
    reason = batch.rejected[0].reason
    assert "nested too deeply" in reason or "depth limit exceeded" in reason
    assert [r.raw for r in batch.records] == [ok]


def test_an_oversize_frame_counts_its_size_in_the_received_bytes(tmp_path: Path) -> None:
    from sluice.sources.coinbase.client import Oversize

    source, metrics = _source(tmp_path)
    _parse(source, [Oversize.of(5_000, b"{", 4096), b"{}"])
    assert _value(metrics, "sluice_component_received_bytes_total") == 5_002
    assert _value(metrics, "sluice_component_received_events_total") == 2


def test_a_batch_of_discards_only_still_reports_every_frame_read(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    _parse(source, [TICKER % (1, 10)])
    batch = _parse(source, [TICKER % (2, 10), TICKER % (3, 9), b'{"type":"rfq_match"}'])
    assert (list(batch.records), list(batch.rejected)) == ([], [])
    assert batch.read_events == 3
    assert batch.discarded == {"unknown_type": 1, "duplicate": 1, "out_of_order": 1}
    assert _value(metrics, "sluice_component_received_events_total") == 4
    assert _value(metrics, "sluice_component_sent_events_total") == 1
    for reason in ("unknown_type", "duplicate", "out_of_order"):
        assert _value(metrics, "sluice_source_discarded_total", reason=reason) == 1
        assert _value(metrics, "sluice_component_dropped_events_total", reason=reason) == 0


@pytest.mark.parametrize(
    ("simulator", "expected"),
    [
        (None, "wall-clock"),
        ({"mode": "replay"}, "wall-clock"),
        ({"mode": "replay", "retime": False}, "recorded"),
        ({"mode": "synthetic"}, "wall-clock"),
    ],
)
def test_event_times_are_recorded_only_for_a_replay_that_keeps_its_times(
    tmp_path: Path, simulator: dict[str, object] | None, expected: str
) -> None:
    fields = {} if simulator is None else {"simulator": simulator}
    source, _ = _source(tmp_path, **fields)
    assert source.event_times() == expected


def test_the_source_declares_its_connection_and_never_sets_the_gauge(tmp_path: Path) -> None:
    source, metrics = _source(tmp_path)
    assert source.connected() is False
    source._subscribed = True
    assert source.connected() is True
    _parse(source, [TICKER % (1, 1)])
    assert (
        metrics.registry.get_sample_value(
            "sluice_source_connected",
            {"component_id": "cb", "component_kind": "source", "component_type": "coinbase"},
        )
        == 0.0
    )


@pytest.mark.parametrize("at", [0, 99, 199])
def test_a_lowercase_nan_in_a_large_batch_of_plain_frames_is_a_dead_letter(
    tmp_path: Path, at: int
) -> None:
    # a batch this large counts each frame's lowercase n in one vectorised pass
    source, _ = _source(tmp_path)
    frames = [_ticker(b"%d" % n, extra=b',"open_24h":"1.5"') for n in range(1, 201)]
    bad = _ticker(b"%d" % (at + 1), price=b'"nan"', extra=b',"open_24h":"1.5"')
    frames[at] = bad
    batch = source._parse(frames)
    assert [r.raw for r in batch.rejected] == [bad]
    assert "price is not a finite number" in batch.rejected[0].reason
    assert sum(r.kind == "ticker" for r in batch.records) == 199


def test_a_batch_knows_its_records_size_only_when_every_frame_made_one(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    whole = source._parse([TICKER % (1, n) for n in range(10, 110)])
    assert whole.nbytes == sum(len(r.raw) for r in whole.records)
    with_gap = source._parse([TICKER % (1, 110), TICKER % (2, 120)])  # a gap record, a ticker
    assert [r.kind for r in with_gap.records] == ["ticker", "gap", "ticker"]
    assert with_gap.nbytes is None
