#!/usr/bin/env bash
# Install sluice and run the demo pipeline: the Coinbase feed into embedded ClickHouse (chDB, no
# server needed) and test.jsonl. With --offline, the built-in Coinbase simulator (a synthetic
# BTC-USD/ETH-USD market) feeds the same flow, so it runs with no network.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
if [ "${1:-}" = "--offline" ]; then
  exec .venv/bin/sluice run examples/offline.yaml
fi
exec .venv/bin/sluice run demo_config.yaml
