"""Event times read from Coinbase's text (``epoch_seconds``) against msgspec's ``datetime`` and
its ``timestamp()``; and an ``l2update`` whose time is in another form, or no time at all, handled
by the source exactly as when every time was decoded to a ``datetime``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import orjson
import pytest

from sluice.sources.coinbase import event_time
from sluice.sources.coinbase.event_time import epoch_seconds
from sluice.sources.coinbase.protocol import classify, decode, full_time
from tests.unit.sources.coinbase.test_books import SNAPSHOT, _source

UPDATE = (
    b'{"type":"l2update","product_id":"BTC-USD","time":"%s","changes":[["buy","99.50","0.25"]]}'
)


def _reference(text: str) -> float:
    """What the source gave before: msgspec's datetime, then ``timestamp()``."""
    seconds: float = decode(UPDATE % text.encode()).time.timestamp()
    return seconds


def _spec_reason(frame: bytes) -> str | None:
    """The dead letter's reason when the frame was decoded by the full spec alone."""
    try:
        decode(frame)
    except Exception as exc:
        return classify(frame, exc)
    return None


def test_coinbase_times_give_exactly_what_datetime_gives() -> None:
    rng = random.Random(12)
    start = datetime(1, 1, 1, tzinfo=UTC)
    span = (datetime(9999, 12, 31, 23, 59, tzinfo=UTC) - start) // timedelta(microseconds=1)
    recent = datetime(2015, 1, 1, tzinfo=UTC)
    for i in range(20_000):
        base = start if i % 2 else recent
        when = base + timedelta(microseconds=rng.randrange(span if i % 2 else 400 * 10**13))
        if not when.microsecond:
            continue
        text = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
        seconds = epoch_seconds(text)
        assert seconds == _reference(text) == when.timestamp(), text


@pytest.mark.parametrize("digits", range(10))
def test_every_fraction_length_gives_the_same_seconds_and_row_as_before(digits: int) -> None:
    for second in ("00", "07", "59"):
        for fraction in ("0" * digits, "9" * digits, "1234567890"[:digits], "5" * digits):
            text = f"2026-11-29T22:15:{second}" + (f".{fraction}" if digits else "") + "Z"
            seconds = epoch_seconds(text)
            if digits == 6 and int(fraction):  # Coinbase's form: read from the text
                assert seconds == _reference(text)
            else:  # any other: None, and the full spec reads it, as before
                assert seconds is None
            frame = UPDATE % text.encode()
            checked = full_time(frame)
            when = decode(frame).time
            assert checked == (when.timestamp(), msgspec.json.encode(when).decode()[1:-1])


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-29T12:00:00.000001Z",  # leap day
        "2000-02-29T23:59:59.999999Z",
        "1970-01-01T00:00:00.000001Z",
        "1969-12-31T23:59:59.999999Z",  # before the epoch: negative
        "0001-01-01T00:00:00.000001Z",
        "9999-12-31T23:59:59.999999Z",
    ],
)
def test_edges_of_the_calendar(text: str) -> None:
    assert epoch_seconds(text) == _reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-29T22:15:23.123456+01:00",
        "2026-11-29T22:15:23.123456-05:30",
        "2026-11-29T22:15:23.123456-00:00",
        "2026-11-29t22:15:23.123456z",
        "2026-11-29 22:15:23.123456Z",
        "2026-11-29T22:15:23+0100",
    ],
)
def test_other_rfc3339_forms_go_to_the_full_parser(text: str) -> None:
    assert epoch_seconds(text) is None
    frame = UPDATE % text.encode()
    when = decode(frame).time
    assert full_time(frame) == (when.timestamp(), msgspec.json.encode(when).decode()[1:-1])


BAD_TIMES = [
    "2026-02-29T00:00:00.000001Z",  # no such day
    "2026-11-29T24:00:00.000001Z",
    "2026-11-29T22:60:00.000001Z",
    "2026-11-29T22:15:60.000001Z",  # a leap second
    "2026-13-01T00:00:00.000001Z",
    "0000-01-01T00:00:00.000001Z",
    "2026-11-29T22:15:2\u0663.123456Z",  # a decimal digit that is not ASCII
    "2026-11-29T22:15: 3.123456Z",
    "2026-11-29T22:15:+3.123456Z",
    "2026-11-29T22:15:23.1_3456Z",
    "2026-11-29T22:15:23.-23456Z",
    "2026-11-29T22:15:23.12345 Z",
    "2026-1-029T22:15:23.123456Z",
    "2026-11-29T22:15:23.123456",
    "2026-11-29T22:15:23",
    "yesterday",
    "",
]


@pytest.mark.parametrize("text", BAD_TIMES)
def test_a_bad_time_is_refused_with_the_full_specs_reason(text: str) -> None:
    assert epoch_seconds(text) is None
    frame = UPDATE % text.encode()
    reason = _spec_reason(frame)
    assert reason is not None and "does not match the Coinbase message spec" in reason
    assert full_time(frame) == reason


def test_the_minute_cache_stays_bounded_and_right() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for minute in range(3 * event_time._MINUTES_KEPT):
        when = start + timedelta(minutes=minute, seconds=17, microseconds=250)
        text = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
        assert epoch_seconds(text) == when.timestamp()
        assert len(event_time._minutes) <= event_time._MINUTES_KEPT


@pytest.mark.parametrize("batch", [1, 100])  # frame by frame, and the batch screen's numpy pass
def test_the_source_dead_letters_a_bad_time_and_keeps_other_forms(
    tmp_path: Path, batch: int
) -> None:
    source, _, _ = _source(tmp_path, ["level2"])
    good = [
        "2026-01-01T00:00:01.000002Z",
        "2026-01-01T01:00:01.000002+01:00",  # the same instant
        "2026-01-01T00:00:01Z",
        "2026-01-01T00:00:01.0000021Z",
    ]
    bad = [UPDATE % t.encode() for t in BAD_TIMES[:6]]
    bad.append(rb'{"type":"l2update","product_id":"BTC-USD","changes":[]}')  # no time
    bad.append(UPDATE.replace(b'"%s"', b"12") % ())  # not text
    escaped = rb'{"type":"l2update","product_id":"BTC-USD","time":"2026-01-01T00:00:01.00000\u0032Z","changes":[["buy","99.50","1"]]}'
    frames = [SNAPSHOT, *(UPDATE % t.encode() for t in good), *bad, escaped]
    frames += [UPDATE % good[0].encode()] * (batch - len(frames))
    parsed = source._parse(frames)
    assert [(r.raw, r.reason) for r in parsed.rejected] == [(f, _spec_reason(f)) for f in bad]
    rows = [orjson.loads(r.raw) for r in parsed.records if b'"snapshot":0' in r.raw]
    expected = [
        "2026-01-01T00:00:01.000002Z",
        "2026-01-01T01:00:01.000002+01:00",
        "2026-01-01T00:00:01Z",
        "2026-01-01T00:00:01.000002Z",
        "2026-01-01T00:00:01.000002Z",
    ]
    expected += ["2026-01-01T00:00:01.000002Z"] * max(0, batch - len(good) - len(bad) - 2)
    assert [row["time"] for row in rows] == expected
    times = [r.time for r in parsed.records if b'"snapshot":0' in r.raw]
    instants = [datetime.fromisoformat(t).timestamp() for t in expected]
    assert times == instants
