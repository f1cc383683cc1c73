"""Order books and signed channels: the real coinbase source, through the real pipeline, against
the simulator over a real socket (level2 into chDB, full-channel sequence gaps, crossed books, a
refused signature)."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.logs import configure_logging
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.simulator import CoinbaseSimulator, SimulatorOptions
from sluice.simulator.auth import AUTH_FAILED, SimulatedKey
from sluice.sinks.clickhouse.testing import LocalChdb
from tests.conftest import wait_until
from tests.integration.support import build_pipeline, read_jsonl, run_pipeline, synthetic

LABELS = {"component_id": "cb", "component_kind": "source", "component_type": "coinbase"}
SECRET = base64.b64encode(b"simulated exchange secret, tests only").decode()
KEY = SimulatedKey("test-key", SECRET, "test-passphrase")
PRODUCTS = ("BTC-USD", "ETH-USD")


def books(**faults: Any) -> SimulatorOptions:
    """A synthetic market with books (400 updates/s), the test key, and ``faults``."""
    return dataclasses.replace(
        synthetic(PRODUCTS, trades_per_sec=20, **faults),
        book_updates_per_sec=400,
        credentials=KEY,
    )


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_KEY", KEY.key)
    monkeypatch.setenv("CB_SECRET", KEY.secret)
    monkeypatch.setenv("CB_PASSPHRASE", KEY.passphrase)


def config(tmp_path: Path, url: str, channels: str, sinks: str = "") -> str:
    return f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb:
    type: coinbase
    url: {url}
    products: [BTC-USD, ETH-USD]
    channels: {channels}
    auth: {{key: "${{CB_KEY}}", secret: "${{CB_SECRET}}", passphrase: "${{CB_PASSPHRASE}}"}}
    reconnect: {{initial_backoff_secs: 0.2, max_backoff_secs: 0.5, jitter: full}}
sinks:
  out:
    type: file
    path: {tmp_path / "out.jsonl"}
    inputs: [cb]
    batch: {{max_age_secs: 0.05}}
{sinks}
"""


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp_path / "out.jsonl")


def lines(tmp_path: Path, needle: bytes) -> int:
    path = tmp_path / "out.jsonl"
    return path.read_bytes().count(needle) if path.exists() else 0


def metric(pipeline: Pipeline, name: str, **labels: str) -> float:
    return pipeline.metrics.registry.get_sample_value(name, {**LABELS, **labels}) or 0.0


async def run(
    tmp_path: Path, text: str, until: Any, timeout: float = 60.0
) -> tuple[Pipeline, RunResult]:
    pipeline = build_pipeline(text)
    result = await run_pipeline(pipeline, until=until, timeout=timeout)
    return pipeline, result


@pytest.mark.parametrize("simulator", [books()], indirect=True)
async def test_level2_changes_land_in_chdb_as_many_as_the_simulator_sent(
    simulator: CoinbaseSimulator, tmp_path: Path, chdb: LocalChdb, key_env: None
) -> None:
    sinks = f"""  ch:
    type: clickhouse
    inputs: [cb.level2]
    path: {chdb.path}
    database: books
    table: coinbase_level2
    ddl: coinbase_level2.sql
    batch: {{max_age_secs: 0.1}}
"""
    text = config(tmp_path, simulator.url, "[level2, heartbeat]", sinks)
    pipeline = build_pipeline(text)

    def caught_up() -> bool:
        if not simulator.sessions or simulator.sessions[0].books.updates < 300:
            return False
        simulator.book_market.paused = True  # from here the client can catch up
        sent = sum(s.books.changes_sent for s in simulator.sessions)
        return lines(tmp_path, b'"type":"level2"') == sent

    result = await run_pipeline(pipeline, until=caught_up, timeout=60)
    assert result.ok, result.error
    [session] = simulator.sessions  # one connection, signed and accepted
    assert session.auth_refusals == 0
    assert session.books.snapshots == len(PRODUCTS)
    snapshots = [orjson.loads(f) for f in session.sent or [] if b'"type":"snapshot"' in f]
    levels = sum(len(s["bids"]) + len(s["asks"]) for s in snapshots)
    rows = chdb.rows(
        "SELECT count(), countIf(snapshot = 1), countIf(snapshot = 0), uniqExact(product_id) "
        "FROM books.coinbase_level2"
    )
    assert rows == [[session.books.changes_sent, levels, session.books.updates, len(PRODUCTS)]]
    # every row is a change the simulator sent: the file sink got the same records
    written = [r for r in records(tmp_path) if r["type"] == "level2"]
    assert len(written) == session.books.changes_sent
    assert all(r["side"] in ("buy", "sell") and float(r["price"]) > 0 for r in written)
    assert [r for r in records(tmp_path) if r["type"] == "gap"] == []
    assert metric(pipeline, "sluice_source_gaps_total") == 0


@pytest.mark.parametrize("simulator", [books(skip_sequence_every=30, connections=1)], indirect=True)
async def test_a_skipped_sequence_number_is_detected_resubscribed_and_reported(
    simulator: CoinbaseSimulator, tmp_path: Path, key_env: None
) -> None:
    text = config(tmp_path, simulator.url, "[full, heartbeat]")
    pipeline, result = await run(tmp_path, text, lambda: lines(tmp_path, b'"type":"gap"') >= 3)
    assert result.ok, result.error
    [session] = simulator.sessions
    gaps = [r for r in records(tmp_path) if r["type"] == "gap"]
    assert len(gaps) >= 3
    skipped = set(session.books.skipped)
    for gap in gaps:
        assert gap["stream"] == "full"
        assert gap["missed"] == 1  # one message left out each time, found exactly
        assert gap["first_missing_sequence"] == gap["last_missing_sequence"]
        assert (gap["product_id"], gap["first_missing_sequence"]) in skipped
    assert metric(pipeline, "sluice_source_gaps_total") == len(gaps)
    assert metric(pipeline, "sluice_source_missed_events_total") == len(gaps)
    # the product was unsubscribed and subscribed again (one resubscribe in flight at a time),
    # on the same connection: the subscribe, then an unsubscribe and a subscribe at least
    replies = [orjson.loads(f) for f in session.sent or [] if b'"type":"subscriptions"' in f]
    assert len(replies) >= 3
    assert any(
        "full" not in {c["name"] for c in r["channels"]}
        or len(next(c for c in r["channels"] if c["name"] == "full")["product_ids"]) < 2
        for r in replies[1:]
    )
    # no sequence number written twice; the full messages are records of kind full
    full = [r for r in records(tmp_path) if r["type"] in ("received", "open", "change", "done")]
    seen = [(r["product_id"], r["sequence"]) for r in full]
    assert full and len(seen) == len(set(seen))


@pytest.mark.parametrize("simulator", [books(cross_book_every=50, connections=1)], indirect=True)
async def test_a_crossed_update_is_detected_and_the_book_resubscribed(
    simulator: CoinbaseSimulator, tmp_path: Path, key_env: None
) -> None:
    text = config(tmp_path, simulator.url, "[level2, heartbeat]")
    pipeline, result = await run(tmp_path, text, lambda: lines(tmp_path, b'"type":"gap"') >= 2)
    assert result.ok, result.error
    [session] = simulator.sessions
    out = records(tmp_path)
    gaps = [r for r in out if r["type"] == "gap"]
    assert len(gaps) >= 2
    assert all(g["stream"] == "level2" and "crossed book" in g["reason"] for g in gaps)
    assert {g["product_id"] for g in gaps} <= set(session.books.crossed)
    assert metric(pipeline, "sluice_source_gaps_total") == len(gaps)
    # a fresh snapshot after each resubscribe (the first snapshots: one per product)
    assert session.books.snapshots >= len(PRODUCTS) + len(gaps) - 1
    first_gap = out.index(gaps[0])
    after = [r for r in out[first_gap:] if r["type"] == "level2" and r["snapshot"] == 1]
    assert {r["product_id"] for r in after} >= {gaps[0]["product_id"]}


@pytest.mark.parametrize("simulator", [books()], indirect=True)
async def test_a_refused_signature_is_reported_once_with_the_exchange_message(
    simulator: CoinbaseSimulator, tmp_path: Path, key_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CB_SECRET", base64.b64encode(b"not the key's secret").decode())
    log = io.StringIO()
    configure_logging("info", "text", stream=log)
    text = config(tmp_path, simulator.url, "[level2, heartbeat]")
    pipeline = build_pipeline(text)
    result = await run_pipeline(pipeline, timeout=30)
    assert not result.ok
    assert AUTH_FAILED in str(result.error)
    assert "invalid signature" in str(result.error)
    assert len(simulator.sessions) == 1  # no reconnect storm: one attempt, then the stop
    assert simulator.sessions[0].auth_refusals == 1
    assert log.getvalue().count("coinbase.subscribe_refused") == 1
    assert metric(pipeline, "sluice_source_reconnects_total") == 0
    # the secret never reaches a log line or the error
    secret = base64.b64encode(b"not the key's secret").decode()
    assert secret not in log.getvalue() and secret not in str(result.error)
    await wait_until(lambda: simulator.sessions[0].disconnected, timeout=10)
    assert orjson.loads(simulator.sessions[0].sent[-1])["message"] == AUTH_FAILED  # type: ignore[index]
