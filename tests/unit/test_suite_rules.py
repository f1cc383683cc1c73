"""The suite's own rules hold: a test that uses the ClickHouse server is marked at collection (so
``-m "not clickhouse_server"`` deselects it), and a skip, at run time or while a module is
imported, is a failure."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

INNER_INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
markers =
    clickhouse_server: needs the server
"""

INNER_CONFTEST = """
import pytest

@pytest.fixture
def clickhouse_server():
    return "server"

@pytest.fixture
def via_server(clickhouse_server):
    return clickhouse_server
"""


def test_tests_using_the_server_fixture_are_deselected_by_its_marker(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INNER_INI)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(
        test_inner="""
        def test_direct(clickhouse_server): pass
        def test_through_a_fixture(via_server): pass
        def test_without(): pass
        """
    )
    result = pytester.runpytest("-p", "tests.conftest", "-m", "not clickhouse_server", "-v")
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines(["*test_without PASSED*"])
    result = pytester.runpytest("-p", "tests.conftest", "-m", "clickhouse_server")
    result.assert_outcomes(passed=2, deselected=1)


def collected(marker: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", marker, "tests/integration"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if "::" in line]


SERVER_PARAMETER = re.compile(r"\[(.*-)?(server|server-as-grafana|clickhouse-server)(-.*)?\]$")


def test_not_clickhouse_server_deselects_every_test_of_the_real_suite_that_uses_it() -> None:
    """Including those that ask for the server at run time, through a parameter."""
    without = collected("not clickhouse_server")
    assert len(without) > 50, "the rest still runs"
    assert [test for test in without if SERVER_PARAMETER.search(test)] == []
    for uses_the_server in [
        "test_grafana_pack.py::test_grafana_user_is_read_only_on_18_16",  # the fixture, no mark
        "test_grafana_pack.py::test_dashboard_queries_show_the_stop[server-as-grafana]",
        "test_monitor_command.py::test_monitor_creates_nothing_where_the_table_does_not_exist[server]",
        "test_clickhouse_sink.py::test_creates_the_table_and_stores_every_ticker[server]",
        "test_sink_conformance.py::test_appends_across_a_restart[clickhouse-server]",
    ]:
        assert not any(test.endswith(uses_the_server) for test in without), uses_the_server
    for runs_without_it in [
        "test_grafana_pack.py::test_dashboard_queries_show_the_stop[chdb]",
        "test_monitor_command.py::test_monitor_creates_nothing_where_the_table_does_not_exist[chdb]",
    ]:
        assert any(test.endswith(runs_without_it) for test in without), runs_without_it


@pytest.mark.parametrize(
    "module",
    [
        'import pytest\npytest.skip("no server here", allow_module_level=True)\n',
        'import pytest\npytest.importorskip("no_such_module_anywhere")\n',
    ],
    ids=["module-level-skip", "importorskip"],
)
def test_a_skip_while_a_module_is_imported_is_a_failure(
    pytester: pytest.Pytester, module: str
) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_inner=module + "def test_never_run(): pass\n")
    result = pytester.runpytest("-p", "tests.conftest")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*collection skipped, which this suite does not allow*"])
    assert result.ret != 0


def test_a_skip_while_a_test_runs_is_a_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
        import pytest

        def test_skips_itself():
            pytest.skip("no server here")

        @pytest.mark.skipif(True, reason="never here")
        def test_skipped_by_a_mark():
            pass

        @pytest.mark.xfail(reason="a known defect", strict=True)
        def test_expected_to_fail():
            assert False
        """
    )
    pytester.makeini(INNER_INI)
    result = pytester.runpytest("-p", "tests.conftest")
    result.assert_outcomes(failed=1, errors=1, xfailed=1)  # a skip mark acts at setup: an error
    result.stdout.fnmatch_lines(["*test skipped, which this suite does not allow*"])
