"""The real coinbase source, through the real pipeline into file sinks, against the simulator
over a real socket: one test per fault, plus the replay of the recorded frames."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.logs import configure_logging
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.simulator import CoinbaseSimulator, SimulatorOptions
from sluice.simulator.markets import load_recording
from sluice.testing import free_port
from tests.conftest import wait_until
from tests.integration.support import build_pipeline, read_jsonl, run_pipeline, synthetic

LABELS = {"component_id": "cb", "component_kind": "source", "component_type": "coinbase"}


@dataclass
class Run:
    result: RunResult
    pipeline: Pipeline
    records: list[dict[str, Any]]
    lines: list[bytes]
    dead_letters: list[dict[str, Any]]
    log: str

    def metric(self, name: str, **labels: str) -> float:
        value = self.pipeline.metrics.registry.get_sample_value(name, {**LABELS, **labels})
        return value or 0.0

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] in types]


async def run_until(
    tmp_path: Path,
    url: str,
    until: Callable[[], bool],
    *,
    products: list[str],
    source: str = "",
    timeout: float = 30.0,
) -> Run:
    """Run a pipeline (coinbase -> file) until ``until()`` holds, then stop it gracefully."""
    log = io.StringIO()
    configure_logging("info", "text", stream=log)
    out = tmp_path / "out.jsonl"
    config = f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb:
    type: coinbase
    url: {url}
    products: {orjson.dumps(products).decode()}
    reconnect: {{initial_backoff_secs: 0.2, max_backoff_secs: 0.5, jitter: full}}
{source}
sinks:
  out:
    type: file
    path: {out}
    inputs: [cb]
    batch: {{max_age_secs: 0.05}}
"""
    pipeline = build_pipeline(config)
    result = await run_pipeline(pipeline, until=until, timeout=timeout)
    lines = out.read_bytes().splitlines() if out.exists() else []
    dead = read_jsonl(tmp_path / "data" / "dead_letters.jsonl")
    return Run(result, pipeline, [orjson.loads(x) for x in lines], lines, dead, log.getvalue())


def written_count(tmp_path: Path) -> int:
    path = tmp_path / "out.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def check_every_trade_written_once_or_gap(run: Run, sim: CoinbaseSimulator, stream: str) -> None:
    """The Done-when check: each trade frame the simulator sent is written once or lies in a
    reported gap, and no trade between the first and last written one vanished silently."""
    types = ("ticker",) if stream == "ticker" else ("match", "last_match")
    written: dict[str, list[int]] = {}
    for record in run.of_type(*types):
        written.setdefault(record["product_id"], []).append(record["trade_id"])
    for product, ids in written.items():
        assert len(ids) == len(set(ids)), f"{product}: a trade was written twice"
    gaps: dict[str, list[tuple[int, int]]] = {}
    for gap in run.of_type("gap"):
        assert gap["stream"] == ("ticker" if stream == "ticker" else "matches")
        gaps.setdefault(gap["product_id"], []).append(
            (gap["first_missing_trade_id"], gap["last_missing_trade_id"])
        )

    def accounted(product: str, trade_id: int) -> bool:
        return trade_id in set(written.get(product, ())) or any(
            a <= trade_id <= b for a, b in gaps.get(product, ())
        )

    # frames after the newest written or gap-reported id of a product were still in flight when
    # the pipeline was stopped: a websocket source cannot be drained (at-most-once at shutdown)
    newest = {
        p: max([*written.get(p, ()), *(b for _, b in gaps.get(p, ()))]) for p in {*written, *gaps}
    }
    sent = 0
    for session in sim.sessions:
        assert session.sent is not None
        for frame in session.sent:
            try:
                message = orjson.loads(frame)
            except orjson.JSONDecodeError:
                continue  # garbage or truncated: checked against the dead letters
            if message.get("type") in types:
                if message["trade_id"] > newest.get(message["product_id"], -1):
                    continue
                sent += 1
                assert accounted(message["product_id"], message["trade_id"]), message
    assert sent > 0
    for product, ids in written.items():
        for trade_id in range(min(ids), max(ids) + 1):
            assert accounted(product, trade_id), f"{product} trade {trade_id} vanished"


PRODUCTS = ["BTC-USD", "ETH-USD"]
TICKERS = "    channels: [ticker, heartbeat]"


@pytest.mark.parametrize(
    "simulator",
    [SimulatorOptions(mode="replay", speed=20, loop=False, retime=False, record_sent=True)],
    indirect=True,
)
async def test_replay_writes_exactly_the_recorded_tickers(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    recording = load_recording()
    recorded = sorted(
        [e.frame for e in recording.events if e.channel == "ticker"]
        + list(recording.initial_tickers.values())
    )
    assert len(recorded) == 107
    run = await run_until(
        tmp_path,
        simulator.url,
        lambda: written_count(tmp_path) >= len(recorded),
        products=list(recording.products),
        source="    channels: [ticker]",
    )
    assert run.result.ok
    assert sorted(run.lines) == recorded  # byte for byte: every field equals the original text
    originals = {orjson.loads(f)["trade_id"]: orjson.loads(f) for f in recorded}
    for record in run.records:
        assert record == originals[record["trade_id"]]
    assert run.of_type("gap") == []
    assert run.dead_letters == []


@pytest.mark.parametrize("simulator", [synthetic(close_after=40, connections=1)], indirect=True)
async def test_a_dropped_connection_reconnects_and_the_lost_trades_are_a_gap(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    run = await run_until(
        tmp_path,
        simulator.url,
        lambda: len(simulator.sessions) >= 2 and simulator.sessions[1].sent_frames >= 40,
        products=PRODUCTS,
        source=TICKERS,
    )
    assert run.result.ok
    assert run.metric("sluice_source_reconnects_total") >= 1
    assert "closed without a close frame" in run.log
    assert run.of_type("gap"), "trades made while reconnecting must show up as a gap"
    assert run.metric("sluice_source_missed_events_total") == sum(
        g["missed"] for g in run.of_type("gap")
    )
    check_every_trade_written_once_or_gap(run, simulator, "ticker")


@pytest.mark.parametrize("simulator", [synthetic(stall_after=30, connections=1)], indirect=True)
async def test_a_stalled_feed_is_detected_by_the_watchdog_and_reopened(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    stale_after = 1.0
    run = await run_until(
        tmp_path,
        simulator.url,
        lambda: len(simulator.sessions) >= 2 and simulator.sessions[1].sent_frames >= 20,
        products=PRODUCTS,
        source=f"{TICKERS}\n    stale_after_secs: {stale_after}",
    )
    assert run.result.ok
    first, second = simulator.sessions[0], simulator.sessions[1]
    assert first.stalled_at > 0
    # pings kept being answered: only the watchdog could see it, and only once the feed had been
    # quiet for stale_after (a lower bound: a loaded machine reopens later, never earlier)
    assert second.connected_at - first.stalled_at >= stale_after
    assert "stale feed" in run.log
    assert run.metric("sluice_source_reconnects_total") == 1
    check_every_trade_written_once_or_gap(run, simulator, "ticker")


@pytest.mark.parametrize(
    "simulator", [synthetic(garbage_every=10, truncate_every=7)], indirect=True
)
async def test_garbage_and_truncated_frames_land_in_the_dead_letters_with_reasons(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    run = await run_until(
        tmp_path,
        simulator.url,
        lambda: bool(simulator.sessions) and simulator.sessions[0].sent_frames >= 300,
        products=PRODUCTS,
        source=TICKERS,
    )
    assert run.result.ok
    session = simulator.sessions[0]
    assert session.sent is not None
    sent = session.sent

    def is_bad(frame: bytes) -> bool:
        try:
            orjson.loads(frame)
        except orjson.JSONDecodeError:
            return True
        return False

    # the pipeline was stopped with the newest frames still in flight (a websocket source cannot
    # be drained): every bad frame it read is a dead letter, that is every bad frame up to the
    # last frame it wrote, and the run of bad frames right after that one which it read too (the
    # garbage frames are all alike, so they are matched by count)
    dead = sorted(d["raw"].encode() for d in run.dead_letters)
    written = set(run.lines)
    end = 1 + max(i for i, frame in enumerate(sent) if frame in written)
    expected = [frame for frame in sent[:end] if is_bad(frame)]
    while len(expected) < len(dead) and end < len(sent) and is_bad(sent[end]):
        expected.append(sent[end])
        end += 1
    assert len(expected) > 40
    assert dead == sorted(expected)
    assert all("not valid JSON" in d["reason"] for d in run.dead_letters)
    assert all(d["component_id"] == "cb" for d in run.dead_letters)
    check_every_trade_written_once_or_gap(run, simulator, "ticker")


@pytest.mark.parametrize(
    "simulator", [synthetic(skip_every=9, repeat_every=7, reorder_every=11)], indirect=True
)
async def test_skipped_repeated_and_reordered_trade_ids_are_gaps_and_discarded_repeats(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    run = await run_until(
        tmp_path,
        simulator.url,
        lambda: bool(simulator.sessions) and simulator.sessions[0].trade_frames >= 400,
        products=PRODUCTS,
        source="    channels: [matches, heartbeat]",
    )
    assert run.result.ok
    assert run.metric("sluice_source_discarded_total", reason="duplicate") > 0
    assert run.metric("sluice_source_discarded_total", reason="out_of_order") > 0
    # repeats are not lost data: nothing is counted as dropped
    for reason in ("duplicate", "out_of_order"):
        assert run.metric("sluice_component_dropped_events_total", reason=reason) == 0
    assert len(run.of_type("gap")) >= 400 // 9
    check_every_trade_written_once_or_gap(run, simulator, "matches")


@pytest.mark.parametrize(
    "simulator",
    [synthetic(trades_per_sec=3000, slow_consumer_bytes=256 * 1024, connections=1)],
    indirect=True,
)
async def test_a_too_slow_pipeline_is_disconnected_and_recovers_with_the_loss_as_a_gap(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    # the pipeline takes 300 records/s while the market makes 3000 trades/s
    source = (
        f"{TICKERS}\n    rate_limit: {{events_per_sec: 300, burst: 100}}\n"
        "    max_pending_bytes: 65536\n    max_batch_events: 100\n    stale_after_secs: 30\n"
        "    receive_buffer_bytes: 65536\n    compression: false"
    )
    run = await run_until(
        tmp_path,
        simulator.url,
        lambda: (
            len(simulator.sessions) >= 2
            and written_count(tmp_path) > 0
            and any(
                b'"type":"gap"' in line
                for line in (tmp_path / "out.jsonl").read_bytes().splitlines()
            )
        ),
        products=PRODUCTS,
        source=source,
        timeout=60,
    )
    assert simulator.sessions[0].close_reason == "ErrSlowConsume"
    assert "ErrSlowConsume" in run.log
    assert run.metric("sluice_component_errors_total", error_type="coinbase_error") >= 1
    assert run.metric("sluice_source_reconnects_total") >= 1
    assert run.of_type("gap")
    check_every_trade_written_once_or_gap(run, simulator, "ticker")


@pytest.mark.parametrize("simulator", [synthetic()], indirect=True)
async def test_an_unknown_product_is_a_clear_fatal_error_not_a_retry_loop(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    config = f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb: {{type: coinbase, url: "{simulator.url}", products: [FOO-USD]}}
sinks:
  out: {{type: file, path: {tmp_path / "out.jsonl"}, inputs: [cb]}}
"""
    result = await run_pipeline(config, timeout=15)
    assert not result.ok
    assert result.error is not None
    assert "FOO-USD is not a valid product" in result.error
    assert len(simulator.sessions) == 1  # no retry loop


async def test_an_unreachable_feed_is_said_once_per_attempt_and_retried(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    run_log = io.StringIO()
    configure_logging("info", "text", stream=run_log)
    config = f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb:
    type: coinbase
    url: ws://127.0.0.1:{port}
    products: [BTC-USD]
    reconnect: {{initial_backoff_secs: 0.1, max_backoff_secs: 0.2, jitter: full}}
sinks:
  out: {{type: file, path: {tmp_path / "out.jsonl"}, inputs: [cb]}}
"""
    pipeline = build_pipeline(config)
    task = asyncio.create_task(pipeline.run())
    await wait_until(lambda: run_log.getvalue().count("source.restarting") >= 2, timeout=10)
    readiness = (await pipeline.readiness())["source/cb"]
    pipeline.stop()
    assert (await task).ok
    lines = [line for line in run_log.getvalue().splitlines() if "source.restarting" in line]
    assert all(
        f"cannot reach 127.0.0.1:{port}" in line and "retry_in_secs=" in line for line in lines
    )
    assert readiness.ready is False
    assert f"cannot reach 127.0.0.1:{port}" in readiness.reason  # the runner names the restart
