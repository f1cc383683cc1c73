#!/usr/bin/env bash
# Install sluice and run the demo pipeline: the Coinbase feed into embedded ClickHouse (chDB, no
# server needed) and test.jsonl. With --offline, the built-in Coinbase simulator (a synthetic
# BTC-USD/ETH-USD market) feeds the same flow, so it runs with no network.
#
# Once the run has started, the dashboard's link is printed on the terminal, with the admin token
# the run wrote to <data_dir>/admin.token (mode 0600) in its #fragment: the page keeps the token
# for its queries and takes it out of the address bar. The token itself is never logged.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
config=demo_config.yaml
data_dir=.sluice # demo_config.yaml's data_dir (the default)
if [ "${1:-}" = "--offline" ]; then
  config=examples/offline.yaml
  data_dir=sluice-data # examples/offline.yaml's data_dir
fi
token_file="$data_dir/admin.token"
rm -f "$token_file" # the run writes a fresh one once its admin port listens

# print the link once the run has written its token (gives up after a minute)
(
  for _ in $(seq 1 600); do
    if [ -s "$token_file" ]; then
      printf '\n  Dashboard: http://127.0.0.1:8686/#token=%s\n' "$(cat "$token_file")" >&2
      printf '  (the admin token is in %s; sluice sql and sluice monitor read it there)\n\n' \
        "$token_file" >&2
      exit 0
    fi
    sleep 0.1
  done
) &
exec .venv/bin/sluice run "$config"
