"""The coinbase source against thousands of hostile and mutated frames over a real socket.

A small websocket server (the `websockets` library, on 127.0.0.1, permessage-deflate on as with
Coinbase, and without it) answers the subscribe request and then sends a fixed, seeded corpus: deep nesting,
invalid UTF-8, binary and fragmented frames, sizes around ``max_frame_bytes``, numbers at and past
every limit, missing and wrongly typed fields, truncated JSON and random byte mutations of the
recorded Coinbase frames. Three connections end with a compressed frame that inflates past the
transport limit, which the client must refuse by closing the connection.

What must hold: the run never stops (it is stopped by the test once every frame arrived), the
client reconnects exactly once per refused frame, and every frame sent is counted exactly once:
as a record, a dead letter with its reason, a counted discard (unknown type, duplicate, out of
order: ``sluice_source_discarded_total``, never a drop) or a control message (``subscriptions``,
``error``).
"""

from __future__ import annotations

import io
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from sluice.logs import configure_logging
from sluice.simulator.markets import load_recording
from sluice.sources.coinbase.protocol import Error, Subscriptions, decode, screen
from tests.integration.support import build_pipeline, read_jsonl, run_pipeline

pytestmark = pytest.mark.timeout(240)

LIMIT = 4096
"""The source's max_frame_bytes in this test (the least the config allows)."""
SEED = 20261129
LABELS = {"component_id": "cb", "component_kind": "source", "component_type": "coinbase"}
TICKER = (
    b'{"type":"ticker","sequence":%s,"product_id":"BTC-USD","price":%s,'
    b'"time":"2026-01-01T00:00:00.000001Z","trade_id":%s}'
)
MATCH = (
    b'{"type":"match","trade_id":%s,"maker_order_id":"m","taker_order_id":"t","side":"buy",'
    b'"size":%s,"price":"1.5","product_id":"ETH-USD","sequence":1,'
    b'"time":"2026-01-01T00:00:01Z"}'
)
HEARTBEAT = (
    b'{"type":"heartbeat","last_trade_id":%s,"product_id":"BTC-USD","sequence":1,'
    b'"time":"2026-01-01T00:00:02Z"}'
)
# integers at and past every limit a column or a decoder has
NUMBERS = [
    b"0",
    b"1",
    b"-1",
    b"9007199254740993",
    b"2147483648",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551615",
    b"18446744073709551616",
    b"1" + b"0" * 21,
    b"1" + b"0" * 400,
    b"1e3",
    b"1.5",
    b"1e400",
    b"-1e400",
    b'"7"',
    b"null",
    b"true",
    b"[]",
    b"{}",
]
DECIMALS = [
    b'"NaN"',
    b'"nan"',
    b'"-NaN"',
    b'"sNaN"',
    b'"Infinity"',
    b'"-Infinity"',
    b'"inf"',
    b'"+inf"',
    b'"-inf"',
    b'"\\u004eaN"',
    b'"1e999999"',
    b'"1e-999999"',
    b'"-0"',
    b'"0.00000001"',
    b'"1' + b"0" * 100 + b'"',
    b'""',
    b'"abc"',
    b"1.5",
    b"NaN",
    b"Infinity",
    b"null",
]


@dataclass
class Frame:
    data: bytes
    how: str = "text"  # text, binary, fragments


@dataclass
class Script:
    """What the server sends: one chunk per connection, in order."""

    chunks: list[list[Frame]]
    enders: int
    """Chunks that end with a frame past the transport limit (the first ones, all but the last)."""
    sent: list[int] = field(default_factory=list)
    """Frames sent per connection (the subscriptions reply and enders not counted)."""


def _hostile(rng: random.Random) -> list[Frame]:
    frames: list[Frame] = []
    add = frames.append
    # nesting, at and around every depth a reader here gives up at (the deepest are also over
    # max_frame_bytes, but under the transport limit: dead letters for their size)
    for depth in (10, 100, 500, 900, 990, 1000, 1023, 1024, 1025, 2000):
        add(Frame(b'{"type":"ticker","x":' + b"[" * depth + b"]" * depth + b"}"))
        add(Frame(b'{"a":' * depth + b"1" + b"}" * depth))
        add(Frame(b"[" * depth))
    add(Frame(b"[" * 16_000))
    # invalid UTF-8 and encodings
    for bad in (
        b"\xff",
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\xf0\x28\x8c\xbc",
        b"\xc0\xaf",
        b"\xe2\x82",
    ):
        add(Frame(b'{"type":"ticker","product_id":"' + bad + b'"}'))
        add(Frame((TICKER % (b"1", b'"1"', b"5"))[:-1] + b',"note":"' + bad + b'"}'))
        add(Frame(b'{"type":"heartbeat","' + bad + b'":1}'))
        add(Frame(bad * 10))
    for escape in (b"\\ud800", b"\\udfff", b"\\u0000", b"\\x41", b"\\"):
        add(Frame((TICKER % (b"1", b'"1"', b"6"))[:-1] + b',"note":"' + escape + b'"}'))
    add(Frame("\ufeff".encode() + TICKER % (b"1", b'"1"', b"7")))
    add(Frame((TICKER % (b"1", b'"1"', b"7")).decode().encode("utf-16")))
    # numbers at and past every limit, in every id and decimal field
    for number in NUMBERS:
        add(Frame(TICKER % (b"1", b'"1"', number)))
        add(Frame(TICKER % (number, b'"1"', b"8")))
        add(Frame(MATCH % (number, b'"0.1"')))
        add(Frame(HEARTBEAT % number))
    for decimal in DECIMALS:
        add(Frame(TICKER % (b"1", decimal, b"9")))
        add(Frame(MATCH % (b"3", decimal)))
    # missing and wrongly typed fields
    base = orjson.loads(TICKER % (b"1", b'"1"', b"10"))
    for name in list(base):
        add(Frame(orjson.dumps({k: v for k, v in base.items() if k != name})))
        wrong: object
        for wrong in (None, [], {}, True, 1, "x", 1.5):
            add(Frame(orjson.dumps({**base, name: wrong})))
    # not JSON, or not an object, or not a known type
    for text in (b"", b" ", b"\n", b"null", b"[]", b"1", b'"ticker"', b"{", b"}", b'{"type":1}'):
        add(Frame(text))
    for type_ in (b"l2update", b"snapshot", b"gap", b"subscribe", b"TICKER", b""):
        add(Frame(b'{"type":"' + type_ + b'","product_id":"BTC-USD"}'))
    # control messages in the middle of the stream
    add(Frame(b'{"type":"error","message":"Slow consumer","reason":"ErrSlowConsume"}'))
    add(Frame(b'{"type":"subscriptions","channels":[{"name":"ticker","product_ids":["X-Y"]}]}'))
    # valid frames with line breaks and odd but legal whitespace
    add(Frame(b"{\n" + TICKER[1:] % (b"1", b'"1"', b"11")))
    add(
        Frame(
            b' \r\n\t{"type":"heartbeat","last_trade_id":11,"product_id":"BTC-USD",'
            b'"sequence":1,"time":"2026-01-01T00:00:02Z"}\r\n'
        )
    )
    # trade ids that silence a product unless it is re-baselined: an outlier, then a run below
    for trade_id in (12, 10**15, 13, 14, 15, 16, 17):
        add(Frame(TICKER % (b"1", b'"1"', str(trade_id).encode())))
    # sizes around the limit: text, binary and fragmented (padding in a field the spec skips)
    for size in (LIMIT - 1, LIMIT, LIMIT + 1, 2 * LIMIT, 4 * LIMIT - 1):
        frame = _padded(size, rng)
        add(Frame(frame))
        add(Frame(frame, "binary"))
        add(Frame(frame, "fragments"))
    return frames


def _padded(size: int, rng: random.Random) -> bytes:
    head = TICKER % (b"1", b'"1"', str(rng.randrange(10**6, 10**7)).encode())
    head = head[:-1] + b',"pad":"'
    return head + b"p" * (size - len(head) - 2) + b'"}'


def _mutated(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[at] = rng.randrange(256)
        elif op == 1:
            data.insert(at, rng.choice(b'{}[]",:\\0123456789eE-+.nN \n\xff\x00'))
        elif op == 2 and data:
            del data[at]
        elif op == 3:
            del data[at:]
        elif op == 4:
            data[at:at] = rng.choice(NUMBERS + DECIMALS)
        else:
            data[at:at] = data[at : at + rng.randrange(1, 50)]
    return bytes(data)


def _script(seed: int, enders: int) -> Script:
    rng = random.Random(seed)
    recorded = [e.frame for e in load_recording().events]
    frames = [Frame(f) for f in recorded]  # the real thing first: records
    frames += _hostile(rng)
    frames += [Frame(_mutated(rng.choice(recorded), rng)) for _ in range(3000)]
    frames += [Frame(f, "binary") for f in rng.sample(recorded, 50)]
    frames += [Frame(f, "fragments") for f in rng.sample(recorded, 50)]
    head = frames[: len(recorded)]
    rest = frames[len(recorded) :]
    rng.shuffle(rest)
    frames = head + rest
    size = len(frames) // (enders + 1)  # one chunk per connection, each but the last ended
    chunks = [frames[i * size : (i + 1) * size] for i in range(enders)] + [frames[enders * size :]]
    return Script(chunks, enders)


BOMB = b'{"type":"ticker","pad":"' + b"b" * (5 * LIMIT) + b'"}'
"""Compresses to a few dozen bytes, inflates past 4 x max_frame_bytes: the client must close."""


def _server(script: Script) -> Callable[[ServerConnection], Awaitable[None]]:
    async def handler(ws: ServerConnection) -> None:
        request = orjson.loads(await ws.recv())
        await ws.send(
            orjson.dumps({"type": "subscriptions", "channels": request["channels"]}), text=True
        )
        number = len(script.sent)
        chunk = script.chunks[number] if number < len(script.chunks) else []
        script.sent.append(0)
        for frame in chunk:
            if frame.how == "binary":
                await ws.send(frame.data, text=False)
            elif frame.how == "fragments":
                size = max(1, len(frame.data) // 3)
                parts = [frame.data[i : i + size] for i in range(0, len(frame.data), size)]
                await ws.send(parts or [b""], text=True)
            else:
                await ws.send(frame.data, text=True)
            script.sent[number] += 1
        if number < script.enders:
            await ws.send(BOMB, text=True)
        await ws.wait_closed()

    return handler


def _control(frame: bytes) -> bool:
    """A frame the source takes as a control message (logged, not a record)."""
    try:
        message = decode(frame)
    except Exception:
        return False
    return isinstance(message, Error | Subscriptions) and screen(frame, message) is None


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_every_hostile_frame_is_a_record_a_dead_letter_or_a_counted_skip(
    tmp_path: Path, compression: str | None
) -> None:
    # uncompressed, a frame past the transport limit is refused by picows, which may or may not
    # hand it over before it disconnects (test_client covers it): no such frame then
    script = _script(SEED, enders=3 if compression else 0)
    total = sum(len(chunk) for chunk in script.chunks)
    assert total > 3500
    log = io.StringIO()
    configure_logging("info", "text", stream=log)
    out = tmp_path / "out.jsonl"
    async with serve(
        _server(script), "127.0.0.1", 0, max_size=None, compression=compression
    ) as server:
        port = server.sockets[0].getsockname()[1]
        pipeline = build_pipeline(
            f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb:
    type: coinbase
    url: ws://127.0.0.1:{port}
    products: [BTC-USD, ETH-USD]
    channels: [ticker, heartbeat, matches]
    max_frame_bytes: {LIMIT}
    stale_after_secs: null
    reconnect: {{initial_backoff_secs: 0.05, max_backoff_secs: 0.1, jitter: full}}
sinks:
  out:
    type: file
    path: {out}
    inputs: [cb]
    batch: {{max_age_secs: 0.05}}
"""
        )
        registry = pipeline.metrics.registry

        def metric(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, {**LABELS, **labels}) or 0.0

        result = await run_pipeline(
            pipeline,
            until=lambda: metric("sluice_component_received_events_total") >= total,
            timeout=120,
        )

    # the run was stopped by the test, never by a frame
    assert result.ok, result.error
    assert result.unwritten == 0
    assert script.sent == [len(chunk) for chunk in script.chunks]
    assert metric("sluice_component_received_events_total") == total
    assert metric("sluice_source_reconnects_total") == script.enders
    assert log.getvalue().count("inflates past 16384 bytes") == script.enders

    lines = out.read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]  # every record is one line of valid JSON
    gaps = [r for r in records if isinstance(r, dict) and r.get("type") == "gap"]
    dead = read_jsonl(tmp_path / "data" / "dead_letters.jsonl")
    discarded = sum(
        metric("sluice_source_discarded_total", reason=reason)
        for reason in ("unknown_type", "duplicate", "out_of_order")
    )
    # nothing here is lost data: no drop of any reason
    assert not [
        sample
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "sluice_component_dropped_events_total" and sample.value
    ]
    frames = [f.data for chunk in script.chunks for f in chunk]
    controls = sum(map(_control, frames))
    assert controls >= 2
    assert metric("sluice_component_errors_total", error_type="coinbase_error") >= 1

    # every frame exactly once: a record, a dead letter, a counted discard or a control message
    assert len(records) - len(gaps) + len(dead) + discarded + controls == total
    assert metric("sluice_component_dead_letters_total") == len(dead)
    assert metric("sluice_component_sent_events_total") == len(records)

    reasons = [d["reason"] for d in dead]
    assert all(reasons)
    oversize = sum(1 for f in frames if len(f) > LIMIT)
    assert sum("over max_frame_bytes (4096)" in r for r in reasons) == oversize
    for words in (
        "nested too deeply",
        "not valid UTF-8",
        "not valid JSON",
        "is not a finite number",
        "$.trade_id",
        "does not match the Coinbase message spec",
    ):
        assert any(words in r for r in reasons), words
    # the outlier id re-baselined BTC-USD instead of silencing it, and the log says so
    assert metric("sluice_source_rebaselines_total") >= 1
    assert "coinbase.trade_ids_rebaselined" in log.getvalue()
