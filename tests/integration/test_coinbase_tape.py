"""Recording a live session to a tape (the coinbase source's `record:`) and replaying it with the
simulator (`--replay`): a second pipeline writes byte-identical records; a damaged tape is a clear
error naming the file and offset."""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import structlog

from sluice.simulator import CoinbaseSimulator, SimulatorOptions
from sluice.tape import (
    KIND_CONNECTION,
    KIND_FRAME,
    RecordConfig,
    TapeWriter,
    read_tape,
    tape_segments,
)
from tests.conftest import SLUICE
from tests.integration.support import build_pipeline, run_pipeline, synthetic

PRODUCTS = ["BTC-USD", "ETH-USD"]
MATCH = (
    b'{"type":"match","trade_id":%d,"maker_order_id":"a","taker_order_id":"b","side":"buy",'
    b'"size":"0.1","price":"100.5","product_id":"BTC-USD","sequence":%d,'
    b'"time":"2024-01-01T00:00:07.000000Z"}'
)


def config(tmp_path: Path, url: str, out: Path, record: str = "") -> str:
    return f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb:
    type: coinbase
    url: {url}
    products: {PRODUCTS}
    channels: [ticker, matches]
{record}
sinks:
  out:
    type: file
    path: {out}
    inputs: [cb]
    batch: {{max_age_secs: 0.05}}
"""


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


@pytest.mark.parametrize("simulator", [synthetic(trades_per_sec=150)], indirect=True)
async def test_a_recorded_session_replayed_into_a_second_pipeline_gives_identical_records(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    tape, first_out, second_out = (
        tmp_path / "tape",
        tmp_path / "first.jsonl",
        tmp_path / "second.jsonl",
    )
    record = f"    record: {{path: {tape}, segment_bytes: 16384}}"
    first = build_pipeline(config(tmp_path / "a", simulator.url, first_out, record))
    result = await run_pipeline(first, until=lambda: len(lines(first_out)) >= 400, timeout=60)
    assert result.ok
    recorded = lines(first_out)
    assert len(tape_segments(tape)) >= 2, "the tape rotated"
    entries = [e for _, e in read_tape(tape)]
    assert entries[0].kind == KIND_CONNECTION
    frames = [e.payload for e in entries if e.kind == KIND_FRAME]
    assert frames[0].startswith(b'{"type":"subscriptions"')
    assert set(recorded) <= set(frames), "every record is a frame of the tape, byte for byte"

    replay = CoinbaseSimulator(
        SimulatorOptions(mode="replay", tape=tape, speed=20, loop=False, retime=False)
    )
    await replay.start("127.0.0.1", 0)
    try:
        second = build_pipeline(config(tmp_path / "b", replay.url, second_out))
        result = await run_pipeline(
            second, until=lambda: len(lines(second_out)) >= len(recorded), timeout=60
        )
    finally:
        await replay.close()
    assert result.ok
    # what the first pipeline had written when it stopped, the second wrote the same, in order
    assert lines(second_out)[: len(recorded)] == recorded


def test_simulate_replay_of_a_damaged_tape_names_the_file_and_offset(tmp_path: Path) -> None:
    tape = tmp_path / "bad.tape.gz"
    tape.write_bytes(
        gzip.compress(b"SLUICETAPE\x01\x00\x02\x00\x00\x00{}" + b"\xf5\x07" + b"\0" * 16)
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluice",
            "simulate",
            "coinbase",
            "--port",
            "0",
            "--replay",
            str(tape),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"{tape}: damaged entry at offset 18" in done.stderr


async def test_simulate_serves_a_tape_and_the_rest_trades_endpoint_until_interrupted(
    tmp_path: Path,
) -> None:
    tape = tmp_path / "tape"
    writer = TapeWriter(RecordConfig(path=tape), {"source": "coinbase"}, structlog.get_logger())
    last_match = MATCH.replace(b'"match"', b'"last_match"')
    writer.frames_received([last_match % (7, 7), MATCH % (8, 8)])
    writer.close()
    process = subprocess.Popen(
        [
            *SLUICE,
            "simulate",
            "coinbase",
            "--port",
            "0",
            "--replay",
            str(tape),
            "--rest",
            "--no-retime",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(r"rest_url=(http://\S+)", line)
            if found:
                rest_url = found.group(1)
                break
        async with aiohttp.ClientSession() as session:
            url = f"{rest_url}/products/BTC-USD/trades"
            async with session.get(url, params={"limit": "5"}) as response:
                assert response.status == 200
                page = await response.json()
        # the tape's last_match is a trade of the exchange from the start (the others once a
        # client subscribes and the market replays them)
        assert [t["trade_id"] for t in page] == [7]
        assert page[0]["time"] == "2024-01-01T00:00:07.000000Z"
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
