"""`sluice sql` and `sluice run` with the clickhouse sink, as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from sluice.sinks.clickhouse.testing import LocalServer, ticker_bytes
from sluice.testing import free_port
from tests.conftest import SLUICE, wait_for

pytestmark = pytest.mark.timeout(180)

QUERY = (
    "SELECT product_id, count() AS n, sum(trade_id) AS trades, max(time) AS last "
    "FROM demo.ticks GROUP BY product_id ORDER BY product_id"
)


def sluice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SLUICE, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def write_tickers(path: Path, count: int) -> None:
    path.write_bytes(b"".join(ticker_bytes(n) + b"\n" for n in range(count)))


def test_sluice_sql_gives_the_same_answer_with_the_pipeline_running_and_stopped(
    tmp_path: Path,
) -> None:
    tickers = tmp_path / "tickers.jsonl"
    write_tickers(tickers, 3000)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""
admin: {{listen: "127.0.0.1:{free_port()}"}}
data_dir: {tmp_path / "data"}
sources:
  feed: {{type: file, path: {tickers}, kind: ticker, follow: true}}
sinks:
  ticks: {{type: clickhouse, inputs: [feed.ticker], path: {tmp_path / "chdb"}, database: demo, table: ticks}}
"""
    )
    run = subprocess.Popen(
        [*SLUICE, "run", str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:

        def all_stored() -> bool:
            answer = sluice(
                "sql", str(config), "SELECT count() AS n FROM demo.ticks", "--format", "json"
            )
            return answer.returncode == 0 and orjson.loads(answer.stdout) == [{"n": 3000}]

        wait_for(all_stored, timeout=60, interval=0.2)
        running = sluice("sql", str(config), QUERY, "--format", "json")
        assert running.returncode == 0, running.stderr
        table_running = sluice("sql", str(config), QUERY)
    finally:
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr.decode()[-2000:]
    stopped = sluice("sql", str(config), QUERY, "--format", "json")
    assert stopped.returncode == 0, stopped.stderr
    assert orjson.loads(stopped.stdout) == orjson.loads(running.stdout)
    rows = orjson.loads(stopped.stdout)
    assert [r["n"] for r in rows] == [1000, 1000, 1000]
    assert sum(r["trades"] for r in rows) == sum(800_000_000 + n for n in range(3000))
    table_stopped = sluice("sql", str(config), QUERY)
    assert table_stopped.stdout == table_running.stdout
    assert "BTC-USD" in table_stopped.stdout
    csv_text = sluice("sql", str(config), QUERY, "--format", "csv").stdout
    assert csv_text.splitlines()[0] == "product_id,n,trades,last"


def test_sluice_sql_refuses_statements_that_write(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""
admin: {{enabled: false}}
sources: {{feed: {{type: generator, count: 1}}}}
sinks: {{ticks: {{type: clickhouse, inputs: [feed], path: {tmp_path / "chdb"}, table: t}}}}
"""
    )
    refused = sluice("sql", str(config), "DROP TABLE default.t")
    assert refused.returncode == 2
    assert "only read-only statements" in refused.stderr
    assert "DropQuery" in refused.stderr
    missing = sluice("sql", str(config), "SELECT 1")
    assert missing.returncode == 1
    assert "no chDB data" in missing.stderr


@pytest.mark.clickhouse_server
def test_sluice_sql_against_a_server_and_credentials_never_logged(
    clickhouse_server: LocalServer, tmp_path: Path, table: str
) -> None:
    tickers = tmp_path / "tickers.jsonl"
    write_tickers(tickers, 500)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""
admin: {{enabled: false}}
log: {{level: debug}}
data_dir: {tmp_path / "data"}
sources:
  feed: {{type: file, path: {tickers}, kind: ticker}}
sinks:
  ticks:
    type: clickhouse
    inputs: [feed]
    url: ${{CLICKHOUSE_URL}}
    user: sluice
    password: ${{CLICKHOUSE_PASSWORD}}
    database: demo
    table: {table}
    retry: {{max_attempts: 2, initial_backoff_secs: 0.05}}
"""
    )
    env = {
        **os.environ,
        "CLICKHOUSE_URL": clickhouse_server.url,
        "CLICKHOUSE_PASSWORD": clickhouse_server.password,
    }
    ran = sluice("run", str(config), "--log-format", "json", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    answer = sluice(
        "sql", str(config), f"SELECT count() AS n FROM demo.{table}", "--format", "json", env=env
    )
    assert answer.returncode == 0, answer.stderr
    assert orjson.loads(answer.stdout) == [{"n": 500}]
    # a wrong password, in the URL this time: the run fails at start with the server's reason
    bad_env = {**env, "CLICKHOUSE_URL": clickhouse_server.url.replace("//", "//sluice:wrong-Pa55@")}
    config.write_text(
        config.read_text()
        .replace("    password: ${CLICKHOUSE_PASSWORD}\n", "")
        .replace("    user: sluice\n", "")
    )
    failing = sluice("run", str(config), env=bad_env)
    assert failing.returncode == 1
    assert "Code: 193" in failing.stderr  # WRONG_PASSWORD, as the server said it
    logs = ran.stdout + ran.stderr + answer.stderr + failing.stdout + failing.stderr
    for secret in (clickhouse_server.password, "wrong-Pa55"):
        assert secret not in logs
    bad_check = sluice(
        "check", str(config), env={**bad_env, "CLICKHOUSE_URL": "ftp://u:wrong-Pa55@x"}
    )
    assert bad_check.returncode == 2
    assert "wrong-Pa55" not in bad_check.stderr + bad_check.stdout
