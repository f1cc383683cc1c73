#!/usr/bin/env bash
# Install everything the tests need (system packages, then the locked Python dependencies and the
# example plugin) and run the whole suite: lint, types, tests. Extra arguments go to pytest.
# The tests run in SLUICE_TEST_WORKERS processes (pytest-xdist, default 4: most of a test's time
# is spent waiting on servers and subprocesses); SLUICE_TEST_WORKERS=0 runs them in this one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
scripts/venv.sh -e '.[test]' -e examples/custom_sink -e examples/custom_source
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/mypy
exec .venv/bin/pytest -n "${SLUICE_TEST_WORKERS:-4}" "$@"
