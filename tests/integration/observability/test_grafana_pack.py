"""observability/grafana: every ClickHouse query of the dashboard and of the alert rule runs on
chDB and on a ClickHouse 18.16 server (also as the read-only `grafana` user) against a table with
a deliberate stop in ingestion, and shows the empty minutes; the provisioning keeps credentials
in environment variables; the read-only user cannot write."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from obs_support import SeededTable, seed_ticker
from tests.conftest import REPO
from tests.integration.support import GRAFANA_PASSWORD

from sluice.sinks.clickhouse.testing import LocalChdb, LocalServer, QueryError

GRAFANA = REPO / "observability" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sluice-ingestion.json"
ALERT_RULES = GRAFANA / "provisioning" / "alerting" / "sluice-ingestion.yaml"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "sluice.yaml"
TABLE = "coinbase_demo.coinbase_ticker"


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def clickhouse_panels() -> dict[str, str]:
    """Panel title -> SQL, for every ClickHouse target of the dashboard."""
    out: dict[str, str] = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["uid"] == "sluice-clickhouse":
                out[panel["title"]] = target["rawSql"]
    return out


def prometheus_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["uid"] == "sluice-prometheus"
    ]


def expand(sql: str, start: int, end: int) -> str:
    """Grafana's global time variables, as Grafana substitutes them before the plugin sees them."""
    sql = sql.replace("${__from:date:seconds}", str(start)).replace(
        "${__to:date:seconds}", str(end)
    )
    assert "$" not in sql, "only ${__from:date:seconds} and ${__to:date:seconds} are expanded"
    return sql


@dataclass
class Panels:
    """The seeded table, and how the dashboard reads it (as the admin, or as the read-only
    `grafana` user)."""

    seeded: SeededTable
    rows: Callable[[str], list[list[Any]]]


@pytest.fixture(
    params=[
        "chdb",
        pytest.param("server", marks=pytest.mark.clickhouse_server),
        pytest.param("server-as-grafana", marks=pytest.mark.clickhouse_server),
    ]
)
def panels(request: pytest.FixtureRequest) -> Iterator[Panels]:
    if request.param == "chdb":
        chdb: LocalChdb = request.getfixturevalue("chdb")
        yield Panels(seed_ticker(chdb, f"g_{uuid.uuid4().hex[:8]}.ticker", time.time()), chdb.rows)
        return
    server: LocalServer = request.getfixturevalue("clickhouse_server")
    if request.param == "server":
        seeded = seed_ticker(server, f"g_{uuid.uuid4().hex[:8]}.ticker", time.time())
        yield Panels(seeded, server.rows)
    else:
        # the grafana user may read coinbase_demo only: seed the real table as the admin,
        # read it as grafana
        server.query("DROP DATABASE IF EXISTS coinbase_demo")
        seeded = seed_ticker(server, TABLE, time.time())
        yield Panels(
            seeded, lambda sql: server.rows(sql, user="grafana", password=GRAFANA_PASSWORD)
        )
    server.query(f"DROP DATABASE IF EXISTS {seeded.table.split('.')[0]}")


def run_panel(panels: Panels, title: str, start: int, end: int) -> list[list[Any]]:
    sql = expand(clickhouse_panels()[title], start, end).replace(TABLE, panels.seeded.table)
    if title.startswith("Rows per minute") or title == "Minutes without rows":
        sql = f"SELECT toUInt32(minute), rows FROM ({sql.replace('minute AS time', 'minute')})"
    return panels.rows(sql)


def test_every_clickhouse_panel_is_checked_here() -> None:
    assert set(clickhouse_panels()) == {
        "Rows per minute (a stop shows as 0, not as a hole)",
        "Minutes without rows",
        "Rows in the last minute",
        "Freshness per product",
        "Trade-id gaps",
        "Missed trades",
        "Prices: last, change and spread per product",
        "Price per minute (close), by product",
        "Spread per minute, by product",
        "Volume and VWAP per minute, by product",
    }


def test_dashboard_queries_show_the_stop(panels: Panels) -> None:
    seeded = panels.seeded
    end = seeded.now()
    start = end - 3600
    expected = seeded.per_minute()
    first_minute = start // 60 * 60

    rows = run_panel(panels, "Rows per minute (a stop shows as 0, not as a hole)", start, end)
    minutes = [int(r[0]) for r in rows]
    assert minutes == list(range(first_minute, first_minute + 60 * ((end - start) // 60 + 1), 60))
    counts = [int(r[1]) for r in rows]
    assert counts == [expected.get(m, 0) for m in minutes]
    zero = [m for m, c in zip(minutes, counts, strict=True) if c == 0]
    stop_start = int(time.time()) - 1560  # the deliberate stop: 26 to 15 minutes ago
    assert any(stop_start <= m <= stop_start + 600 for m in zero)
    assert zero[-5:] == minutes[-5:]  # the feed stopped: the last minutes are empty

    empty = run_panel(panels, "Minutes without rows", start, end)
    assert sorted(int(r[0]) for r in empty) == zero

    assert run_panel(panels, "Rows in the last minute", start, end) == [[0]]

    fresh = run_panel(panels, "Freshness per product", start, end)
    assert sorted(r[0] for r in fresh) == ["BTC-USD", "ETH-USD"]
    assert all(int(r[2]) >= 300 for r in fresh)

    gaps = run_panel(panels, "Trade-id gaps", start, end)
    assert [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in gaps] == seeded.gaps

    assert run_panel(panels, "Missed trades", start, end) == [[11]]


def test_market_panels_read_the_candles_of_the_shipped_ddl(panels: Panels) -> None:
    """The market panels read the candles view that the shipped DDL keeps next to the table;
    each agrees with the ticker table itself (seeded at price 100.5, bid 100.4, ask 100.6)."""
    seeded = panels.seeded
    end = seeded.now()
    start = end - 3600
    minutes = dict(
        (str(r[0]), int(r[1]))
        for r in panels.rows(
            f"SELECT product_id, uniqExact(toStartOfMinute(time)) FROM {seeded.table} "
            f"WHERE time >= toStartOfMinute(toDateTime({start})) GROUP BY product_id"
        )
    )
    assert set(minutes) == {"BTC-USD", "ETH-USD"}

    prices = run_panel(panels, "Prices: last, change and spread per product", start, end)
    assert [r[0] for r in prices] == ["BTC-USD", "ETH-USD"]
    for _, last, change, spread in prices:
        assert float(last) == 100.5
        assert float(change) == 0
        assert float(spread) == pytest.approx(0.2)
    for title, column in (
        ("Price per minute (close), by product", 2),
        ("Spread per minute, by product", 2),
        ("Volume and VWAP per minute, by product", 3),
    ):
        rows = run_panel(panels, title, start, end)
        per_product: dict[str, int] = {}
        for row in rows:
            per_product[row[1]] = per_product.get(row[1], 0) + 1
        assert per_product == minutes, title
        if column == 3:  # VWAP of trades all at 100.5
            assert all(float(r[3]) == pytest.approx(100.5) for r in rows)


def alert_rule() -> dict[str, Any]:
    document = yaml.safe_load(ALERT_RULES.read_text())
    (group,) = document["groups"]
    (rule,) = group["rules"]
    return dict(rule)


def evaluate_alert(rule: dict[str, Any], run_sql: Callable[[str], list[list[Any]]]) -> bool:
    """Evaluate the rule's query -> reduce -> threshold chain as Grafana does; True = firing."""
    steps = {d["refId"]: d["model"] for d in rule["data"]}
    values: dict[str, float] = {}
    for ref, model in steps.items():
        if "rawSql" in model:
            rows = run_sql(model["rawSql"])
            values[ref] = float(rows[-1][-1]) if rows else float("nan")
        elif model["type"] == "reduce":
            assert model["reducer"] == "last"
            values[ref] = values[model["expression"]]
        elif model["type"] == "threshold":
            (condition,) = model["conditions"]
            evaluator = condition["evaluator"]
            assert evaluator["type"] == "lt"
            values[ref] = float(values[model["expression"]] < evaluator["params"][0])
    return values[rule["condition"]] == 1.0


def test_alert_rule_fires_after_the_stop_and_not_while_rows_arrive(panels: Panels) -> None:
    rule = alert_rule()
    assert rule["noDataState"] == "Alerting"
    assert rule["execErrState"] == "Alerting"
    query = next(d for d in rule["data"] if d["datasourceUid"] == "sluice-clickhouse")
    assert query["model"]["rawSql"].count(TABLE) == 1

    def run(sql: str) -> list[list[Any]]:
        return panels.rows(sql.replace(TABLE, panels.seeded.table))

    assert evaluate_alert(rule, run) is True, "fewer than 1 row in the last minute: firing"
    panels.seeded.insert_now()
    assert evaluate_alert(rule, run) is False, "a row in the last minute: resolved"


def test_dashboard_json_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "sluice-ingestion"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in {"sluice-clickhouse", "sluice-prometheus"}


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every Prometheus expression of the dashboard (as recording rules)."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": expr}
                    for i, expr in enumerate(prometheus_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        ["/usr/bin/promtool", "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(prometheus_exprs()) >= 8


def test_datasource_credentials_come_from_the_environment() -> None:
    document = yaml.safe_load(DATASOURCES.read_text())
    by_uid = {d["uid"]: d for d in document["datasources"]}
    clickhouse = by_uid["sluice-clickhouse"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    env_ref = re.compile(r"^\$\{[A-Z][A-Z0-9_]*\}$")
    assert env_ref.match(clickhouse["secureJsonData"]["password"])
    assert env_ref.match(clickhouse["jsonData"]["username"])
    assert env_ref.match(clickhouse["jsonData"]["host"])
    assert env_ref.match(by_uid["sluice-prometheus"]["url"])
    text = DATASOURCES.read_text().lower()
    assert "basicauthpassword" not in text
    assert "password:" in text


def test_grafana_user_is_read_only_on_18_16(clickhouse_server: LocalServer) -> None:
    server = clickhouse_server
    db = "coinbase_demo"
    server.query(f"CREATE DATABASE IF NOT EXISTS {db}")
    server.query(f"CREATE TABLE IF NOT EXISTS {db}.probe (a UInt8) ENGINE = Memory")
    other = f"other_{uuid.uuid4().hex[:6]}"
    server.query(f"CREATE DATABASE IF NOT EXISTS {other}")
    as_grafana = {"user": "grafana", "password": GRAFANA_PASSWORD}
    try:
        assert server.rows(f"SELECT count() FROM {db}.probe", **as_grafana) == [[0]]
        # the settings Grafana's plugins send with each query are accepted
        assert server.rows("SELECT 1 SETTINGS max_execution_time = 30", **as_grafana) == [[1]]
        for statement, words in [
            (f"INSERT INTO {db}.probe VALUES (1)", "readonly"),
            (f"CREATE TABLE {db}.evil (a UInt8) ENGINE = Memory", "readonly"),
            (f"DROP TABLE {db}.probe", "readonly"),
            ("SET readonly = 0", "readonly"),
            (f"SELECT name FROM system.tables WHERE database = '{db}' AND name = 'probe'", None),
        ]:
            if words is None:  # system tables stay readable, and say what the admin sees
                assert server.rows(statement, **as_grafana) == [["probe"]]
                continue
            with pytest.raises(QueryError, match=words):
                server.query(statement, **as_grafana)
        with pytest.raises(QueryError, match="Access denied to database default"):
            server.query("SELECT 1 FROM default.nonexistent_probe", **as_grafana)
        with pytest.raises(QueryError, match="Wrong password for user grafana"):
            server.query("SELECT 1", user="grafana", password="wrong")
    finally:
        server.query(f"DROP TABLE IF EXISTS {db}.probe")
        server.query(f"DROP DATABASE IF EXISTS {other}")


def test_grafana_user_sql_for_current_servers_parses(chdb: LocalChdb) -> None:
    text = (GRAFANA / "clickhouse" / "grafana_user.sql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in body.split(";") if s.strip()]
    assert [s.split()[0:2] for s in statements] == [
        ["CREATE", "SETTINGS"],
        ["CREATE", "USER"],
        ["GRANT", "SELECT"],
        ["GRANT", "SELECT"],
    ]
    # the engine's own parser reads each statement back as exactly what it is meant to say
    formatted = [
        chdb.rows(
            "SELECT formatQuerySingleLine('{}')".format(s.replace("\\", "\\\\").replace("'", "\\'"))
        )[0][0]
        for s in statements
    ]
    assert formatted == [
        "CREATE SETTINGS PROFILE IF NOT EXISTS `grafana_readonly` SETTINGS readonly = 2, "
        "max_execution_time = 60 MAX 300, max_memory_usage = 2000000000 MAX 4000000000, "
        "max_result_rows = 1000000",
        "CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY 'CHANGE_ME' "
        "SETTINGS PROFILE `grafana_readonly`",
        "GRANT SELECT ON coinbase_demo.* TO grafana",
        "GRANT SELECT ON system.numbers TO grafana",
    ]
