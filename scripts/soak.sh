#!/usr/bin/env bash
# Soak the test suite: run it once on its own (run 0, the baseline), then RUNS times in a row
# (default 10) beside a CPU-bound job pinned to one core; stop at the first failure. Each run's
# log goes to soak/run-N.log and its wall time to soak/times.txt; the last line printed compares
# the slowest loaded run with the baseline.
# Run ./scripts/test.sh once first (it installs what the suite needs); extra arguments go to
# pytest, e.g. `scripts/soak.sh -m "not browser"`. BASELINE_SECS=N skips run 0 and compares with
# N seconds (a baseline measured before on the same machine and code).
# Usage: [RUNS=10] [BASELINE_SECS=N] scripts/soak.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-10}
workers=${SLUICE_TEST_WORKERS:-4}
mkdir -p soak
: > soak/times.txt

hog=
trap '[ -z "$hog" ] || kill "$hog" 2>/dev/null || true' EXIT

first=0
if [ -n "${BASELINE_SECS:-}" ]; then
  echo "0 $BASELINE_SECS given" >> soak/times.txt
  first=1
fi
for run in $(seq "$first" "$runs"); do
  if [ "$run" = 1 ]; then
    # The load: one busy Python process on core 0 (what `stress --cpu 1` does, without the package).
    taskset -c 0 python3 -c 'while True: pass' &
    hog=$!
  fi
  started=$(date +%s)
  if .venv/bin/pytest -n "$workers" -q -p no:cacheprovider "$@" > "soak/run-$run.log" 2>&1; then
    status=passed
  else
    status=failed
  fi
  seconds=$(($(date +%s) - started))
  echo "$run $seconds $status" >> soak/times.txt
  echo "run $run/$runs$([ "$run" = 0 ] && echo " (baseline, no load)"): $status in ${seconds} s: $(tail -n 1 "soak/run-$run.log")"
  if [ "$status" = failed ]; then
    echo "stopped at the first failure; see soak/run-$run.log" >&2
    exit 1
  fi
done
awk 'NR == 1 {base = $2; next} {if ($2 > slowest) slowest = $2; total += $2; n++}
     END {printf "baseline %d s; %d loaded runs passed: mean %.0f s, slowest %d s (%.0f%% of the baseline)\n",
          base, n, total / n, slowest, 100 * slowest / base}' soak/times.txt
