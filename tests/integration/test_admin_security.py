"""The admin port of a running pipeline, over real HTTP on loopback: `POST /api/query` answers one
read-only SELECT with the token, on chDB and on the server, and refuses everything else (writes,
files, URLs, other servers, settings; no token, a wrong token, another Origin, another Host, a body
that is not JSON); the generated token lives in a private file and never in the log."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog

from sluice.config import load_config_text
from sluice.logs import configure_logging
from sluice.metrics import Metrics
from sluice.observability.auth import TOKEN_FILE
from sluice.observability.service import Observability
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline
from sluice.sinks.clickhouse.testing import LocalServer, ticker_bytes
from sluice.testing import free_port
from tests.conftest import SLUICE, wait_for, wait_until
from tests.integration.support import READER_DATABASE, Listener, forbidden

RECORDS = 5


@dataclass
class Admin:
    url: str
    token: str
    port: int
    table: str
    data_dir: Path
    log: io.StringIO
    session: aiohttp.ClientSession

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None, path: str = "api/query"
    ) -> tuple[int, Any]:
        async with self.session.post(self.url + path, data=body, headers=headers or {}) as answer:
            text = await answer.read()
            return answer.status, orjson.loads(text) if text else None

    async def query(self, sql: str) -> tuple[int, Any]:
        return await self.post(
            orjson.dumps({"sql": sql}),
            {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )

    async def get(self, path: str, headers: dict[str, str] | None = None) -> int:
        async with self.session.get(self.url + path, headers=headers or {}) as answer:
            await answer.read()
            return answer.status


@contextlib.asynccontextmanager
async def running(config: str, table: str, data_dir: Path) -> AsyncIterator[Admin]:
    """The pipeline of ``config`` in this process with its admin server, its log in memory."""
    log = io.StringIO()
    configure_logging("info", "json", stream=log)
    registry = Registry.from_entry_points()
    loaded = load_config_text(config, registry)
    pipeline = Pipeline.build(loaded, registry, Metrics())
    observability = Observability(pipeline, loaded.model)
    await observability.start()
    task = asyncio.create_task(pipeline.run())
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    assert observability.admin is not None
    admin = Admin(
        observability.admin.url,
        observability.admin.token,
        observability.admin.port,
        table,
        data_dir,
        log,
        session,
    )
    try:
        yield admin
    finally:
        pipeline.stop("test finished")
        with contextlib.suppress(Exception):
            await task
        await session.close()
        await observability.close()
        structlog.reset_defaults()


@pytest.fixture(params=["chdb", pytest.param("server", marks=pytest.mark.clickhouse_server)])
async def admin(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Admin]:
    """A pipeline whose file source follows a file of tickers into a clickhouse sink (chDB, or the
    session's server), with all records stored, and its admin port."""
    tickers = tmp_path / "tickers.jsonl"
    tickers.write_bytes(b"".join(ticker_bytes(n) + b"\n" for n in range(RECORDS)))
    name = f"t_{uuid.uuid4().hex[:10]}"
    server: LocalServer | None = None
    if request.param == "server":
        server = request.getfixturevalue("clickhouse_server")
        target = f'url: "{server.url}"'
    else:
        target = f'path: "{tmp_path / "chdb"}"'
    config = f"""
data_dir: {tmp_path / "data"}
admin: {{listen: "127.0.0.1:0"}}
sources:
  feed: {{type: file, path: {tickers}, kind: ticker, follow: true}}
sinks:
  ticks: {{type: clickhouse, {target}, inputs: [feed], database: {READER_DATABASE}, table: {name}}}
"""
    table = f"{READER_DATABASE}.{name}"
    async with running(config, table, tmp_path / "data") as admin:

        async def stored() -> bool:
            status, body = await admin.query(f"SELECT count() AS n FROM {table}")
            return status == 200 and body["rows"] == [[RECORDS]]

        await wait_until(stored, timeout=60, interval=0.1)
        yield admin
    if server is not None:
        server.query(f"DROP TABLE IF EXISTS {table}")
        server.query(f"DROP TABLE IF EXISTS {READER_DATABASE}.made")


async def test_a_select_with_the_token_answers_columns_types_and_rows(admin: Admin) -> None:
    status, body = await admin.query(
        f"SELECT product_id, count() AS n FROM {admin.table} GROUP BY product_id "
        "ORDER BY product_id"
    )
    assert status == 200, body
    assert body["columns"] == ["product_id", "n"]
    assert body["types"][1] == "UInt64"
    assert sum(row[1] for row in body["rows"]) == RECORDS


async def test_api_query_refuses_every_write_and_reach_out_form(
    admin: Admin, tmp_path: Path, listener: Listener
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for queries\n")
    answered = {}
    for sql in forbidden(out, secret, listener.port, admin.table):
        status, body = await admin.query(sql)
        if not (status == 400 and body.get("refused") is True):
            answered[sql] = (status, body)
    assert answered == {}
    assert list(out.iterdir()) == []
    assert listener.connections == 0
    status, body = await admin.query(f"SELECT count() FROM {admin.table}")
    assert (status, body["rows"]) == (200, [[RECORDS]])
    status, body = await admin.query(
        f"SELECT count() FROM system.tables WHERE database = '{READER_DATABASE}' AND name = 'made'"
    )
    assert (status, body["rows"]) == (200, [[0]])


@pytest.mark.parametrize("admin", ["chdb"], indirect=True)
async def test_api_query_refuses_requests_without_the_token_origin_host_or_json(
    admin: Admin,
) -> None:
    sql = orjson.dumps({"sql": f"SELECT count() FROM {admin.table}"})
    good = {"Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"}
    own_origin = f"http://127.0.0.1:{admin.port}"
    cases: dict[str, tuple[dict[str, str], int]] = {
        "no token": ({"Content-Type": "application/json"}, 401),
        "wrong token": ({**good, "Authorization": f"Bearer {admin.token}x"}, 401),
        "empty bearer": ({**good, "Authorization": "Bearer "}, 401),
        "basic scheme": ({**good, "Authorization": f"Basic {admin.token}"}, 401),
        "foreign origin": ({**good, "Origin": "http://evil.example"}, 403),
        "null origin": ({**good, "Origin": "null"}, 403),
        "same host, other port": ({**good, "Origin": f"http://127.0.0.1:{admin.port + 1}"}, 403),
        "foreign host": ({**good, "Host": f"evil.example:{admin.port}"}, 403),
        "loopback name, other port": ({**good, "Host": f"127.0.0.1:{admin.port + 1}"}, 403),
        "text/plain": ({**good, "Content-Type": "text/plain"}, 415),
        "form": ({**good, "Content-Type": "application/x-www-form-urlencoded"}, 415),
        "own origin": ({**good, "Origin": own_origin}, 200),
        "localhost host": ({**good, "Host": f"localhost:{admin.port}"}, 200),
        "good": (good, 200),
    }
    answers = {name: (await admin.post(sql, headers))[0] for name, (headers, _) in cases.items()}
    assert answers == {name: status for name, (_, status) in cases.items()}
    status, body = await admin.post(sql, {"Content-Type": "application/json"})
    assert status == 401
    assert "token" in body["error"] and admin.token not in body["error"]


@pytest.mark.parametrize("admin", ["chdb"], indirect=True)
async def test_probes_and_status_stay_open_but_every_route_checks_the_host(admin: Admin) -> None:
    for path in ("metrics", "healthz", "readyz", "api/status", "", "static/app.js"):
        assert await admin.get(path) == 200, path
        assert await admin.get(path, {"Host": f"rebound.example:{admin.port}"}) == 403, path
    assert await admin.get("api/status", {"Host": f"[::1]:{admin.port}"}) == 200


@pytest.mark.parametrize("admin", ["chdb"], indirect=True)
async def test_the_generated_token_is_in_a_private_file_and_only_its_path_is_logged(
    admin: Admin,
) -> None:
    path = admin.data_dir / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == admin.token
    events = [orjson.loads(line) for line in admin.log.getvalue().splitlines()]
    assert {"event": "admin.token_file", "path": str(path)}.items() <= next(
        e for e in events if e["event"] == "admin.token_file"
    ).items()
    assert admin.token not in admin.log.getvalue()


async def test_a_configured_token_comes_from_the_environment_and_no_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_TEST_ADMIN_TOKEN", "s3cret-from-env")
    config = f"""
data_dir: {tmp_path / "data"}
admin: {{listen: "127.0.0.1:0", token: "${{SLUICE_TEST_ADMIN_TOKEN}}"}}
sources: {{feed: {{type: generator, count: 1}}}}
sinks: {{out: {{type: file, path: {tmp_path / "out.jsonl"}, inputs: [feed]}}}}
"""
    async with running(config, "", tmp_path / "data") as admin:
        assert admin.token == "s3cret-from-env"
        status, _ = await admin.query("SELECT 1")
        assert status == 404  # authorised; no queryable sink here
        status, _ = await admin.post(b"{}", {"Authorization": "Bearer other"})
        assert status == 401
        assert "s3cret-from-env" not in admin.log.getvalue()
    assert not (tmp_path / "data" / TOKEN_FILE).exists()


@pytest.mark.parametrize(
    ("admin_block", "code"),
    [
        ('{listen: "0.0.0.0:8686"}', 2),
        ('{listen: "192.0.2.7:8686"}', 2),
        ('{listen: "[::]:8686"}', 2),
        ('{listen: "0.0.0.0:8686", token: "${SLUICE_TEST_ADMIN_TOKEN}"}', 0),
        ('{listen: "localhost:8686"}', 0),
        ('{listen: "[::1]:8686"}', 0),
    ],
)
def test_listening_beyond_loopback_needs_a_token(
    tmp_path: Path, admin_block: str, code: int
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""sources: {{feed: {{type: generator, count: 1}}}}
sinks: {{out: {{type: file, path: {tmp_path / "out.jsonl"}, inputs: [feed]}}}}
admin: {admin_block}
"""
    )
    env = {**os.environ, "SLUICE_TEST_ADMIN_TOKEN": "t0ken"}
    for command in ("check", "run"):
        if command == "run" and code == 0:
            continue
        done = subprocess.run(
            [*SLUICE, command, str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == code, done.stderr
        if code == 2:
            assert "admin.listen" in done.stderr
            assert "line 3" in done.stderr
            assert "admin.token" in done.stderr


@pytest.mark.browser
@pytest.mark.slow
def test_the_dashboard_queries_with_the_token_from_the_link_or_the_prompt(tmp_path: Path) -> None:
    """`apiQuery(sql, sink)` in headless Chromium: the token given once as `#token=` leaves the
    address bar and authorises queries; without it a 401 brings up the token prompt."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    tickers = tmp_path / "tickers.jsonl"
    tickers.write_bytes(b"".join(ticker_bytes(n) + b"\n" for n in range(RECORDS)))
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
admin: {{listen: "127.0.0.1:{port}"}}
sources:
  feed: {{type: file, path: {tickers}, kind: ticker, follow: true}}
sinks:
  ticks: {{type: clickhouse, path: "{tmp_path / "chdb"}", inputs: [feed], database: d, table: t}}
"""
    )
    process = subprocess.Popen(
        [*SLUICE, "run", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    token_file = tmp_path / "data" / TOKEN_FILE
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: token_file.exists() and token_file.read_text().strip(), timeout=60)
        token = token_file.read_text().strip()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            try:
                page = browser.new_page()
                page.goto(f"{url}#token={token}")
                assert page.evaluate("window.location.hash") == ""
                assert page.evaluate("sessionStorage.getItem('sluice.admin.token')") == token
                count = "SELECT count() AS n FROM d.t"
                page.wait_for_function(
                    f"() => apiQuery({count!r}, 'ticks').then(r => r.rows[0][0] === {RECORDS})",
                    timeout=60_000,
                    polling=200,
                )
                answer = page.evaluate("apiQuery('SELECT 1 AS one')")
                assert answer == {"columns": ["one"], "types": ["UInt8"], "rows": [[1]]}
                refused = page.evaluate(
                    "apiQuery('DROP TABLE d.t').then(() => 'ran', e => e.message)"
                )
                assert "DropQuery" in refused

                # a new tab without the token: the 401 brings up the prompt
                page = browser.new_page()
                page.goto(url)
                page.evaluate("window.pending = apiQuery('SELECT 2 AS two'); 0")
                page.wait_for_selector("#token-prompt #token-input")
                page.fill("#token-input", token)
                page.click("#token-prompt button[value=ok]")
                assert page.evaluate("window.pending") == {
                    "columns": ["two"],
                    "types": ["UInt8"],
                    "rows": [[2]],
                }
                page.evaluate(
                    "sessionStorage.clear(); window.pending = apiQuery('SELECT 3')"
                    ".then(() => 'ran', e => e.message); 0"
                )
                page.wait_for_selector("#token-prompt #token-input")
                page.click("#token-prompt button[value=cancel]")
                assert "token is needed" in page.evaluate("window.pending")
            finally:
                browser.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert process.returncode == 0
