"""Shared fixtures: paths, a way to run the ``sluice`` command, and condition waits
(:func:`wait_for` blocks, for a test outside the event loop; :func:`wait_until` awaits)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
SLUICE = [sys.executable, "-m", "sluice"]
SLUICE_TESTING = [sys.executable, "-m", "sluice.testing"]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that; fail the test
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {condition}")


async def wait_until(
    condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def read_log_until(process: subprocess.Popen[str], event: str) -> list[dict[str, Any]]:
    """Read a process's JSON log lines (``--log-format json`` on stderr) up to and including the
    first ``event``; fails if the process ends first. The rest stays in the pipe."""
    assert process.stderr is not None
    read: list[dict[str, Any]] = []
    while not read or read[-1].get("event") != event:
        line = process.stderr.readline()
        assert line, f"the process ended before logging {event}"
        if line.startswith("{"):
            read.append(json.loads(line))
    return read


def sent_events(admin_url: str) -> dict[str, int]:
    """Records each component passed on (sources) or wrote (sinks), from a process's /metrics."""
    with urllib.request.urlopen(admin_url + "metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["component_id"]: int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "sluice_component_sent_events_total"
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary current directory (the default data_dir lives there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


Spawn = Callable[..., subprocess.Popen[str]]
"""The ``spawn`` fixture: ``spawn(args, cwd=None, **env)``."""


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start processes that are killed at the end of the test if still running."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str], cwd: Path | None = None, **env: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


pytest_plugins = ["pytester"]

SERVER_FIXTURES = frozenset(
    {
        "clickhouse_server",
        "clickhouse_server_session",
        "clickhouse_cluster",
        "clickhouse_cluster_session",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the ClickHouse server at collection, so that
    ``-m "not clickhouse_server"`` deselects them all (a mark added when a fixture is set up comes
    too late to deselect). A test that asks for the server only while it runs
    (``request.getfixturevalue``) carries the mark itself, on its parameter; the
    ``clickhouse_server`` fixture fails a test that does not."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.clickhouse_server)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped test is a test that did not run: report it as a failure (CI must provide every
    service the tests use)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"test skipped, which this suite does not allow: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A module skipped while it is imported or collected (``pytest.skip(allow_module_level=True)``,
    ``pytest.importorskip``) would take all its tests out of the run unseen: a collection error."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped:
        report.outcome = "failed"
        report.longrepr = f"collection skipped, which this suite does not allow: {report.longrepr}"


def ec_key_pair() -> tuple[str, str]:
    """A fresh EC P-256 key, as a CDP API key is: (private key PEM, public key PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()
