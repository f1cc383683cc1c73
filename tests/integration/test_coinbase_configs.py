"""The shipped configs load, the offline one runs, and `sluice simulate coinbase` serves."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from sluice.config.loader import load_config, load_config_text
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline
from tests.integration.support import read_jsonl, run_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["demo_config.yaml", "examples/offline.yaml"])
def test_shipped_configs_load(name: str) -> None:
    loaded = load_config(ROOT / name, Registry.from_entry_points())
    assert loaded.model.sources["coinbase"].type == "coinbase"


async def test_the_offline_example_runs_on_its_own_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's paths are relative
    registry = Registry.from_entry_points()
    text = (
        (ROOT / "examples/offline.yaml")
        .read_text()
        .replace("trades_per_sec: 8}", "trades_per_sec: 100}")
    )
    pipeline = Pipeline.build(load_config_text(text, registry), registry)
    out = tmp_path / "sluice-data/offline-ticks.jsonl"
    result = await run_pipeline(pipeline, until=lambda: len(read_jsonl(out)) >= 20, timeout=20)
    assert result.ok
    tickers = read_jsonl(out)
    assert {t["type"] for t in tickers} == {"ticker"}
    products = {"BTC-USD", "ETH-USD"}
    assert {t["product_id"] for t in tickers} <= products


async def test_simulate_coinbase_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice",
            "simulate",
            "coinbase",
            "--port",
            "0",
            "--mode",
            "synthetic",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        url = ""
        for line in process.stderr:
            found = re.search(r"url=(ws://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url
        async with connect(url) as ws:
            request = {
                "type": "subscribe",
                "channels": [{"name": "ticker", "product_ids": ["BTC-USD"]}],
            }
            await ws.send(json.dumps(request))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["type"] == "subscriptions"
            ticker = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert ticker["type"] == "ticker"
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_simulate_coinbase_refuses_bad_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "simulate", "coinbase", "--mode", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--mode must be replay or synthetic" in done.stderr
