"""The shipped DDL and the dashboard are inside the built package, so an installed sluice finds
them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_contains_the_shipped_ddl(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("sluice-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "coinbase_ticker.sql",
        "coinbase_ticker.legacy.sql",
        "coinbase_ticker.cluster.sql",
        "coinbase_ticker.cluster.legacy.sql",
    ):
        packaged = zipfile.ZipFile(wheel).read(f"sluice/sql/{name}")
        assert packaged == (ROOT / "sql" / name).read_bytes()
    assert "sluice/sinks/clickhouse/sink.py" in names
    dashboard = ROOT / "src" / "sluice" / "observability" / "dashboard"
    for path in sorted(dashboard.iterdir()):
        assert f"sluice/observability/dashboard/{path.name}" in names
