#!/usr/bin/env bash
# Regenerate docs/images/dashboard-offline-demo.png, the dashboard screenshot in the README: runs
# the offline demo's browser test (`sluice run examples/offline.yaml` for a minute, headless
# Chromium with the network cut off), which leaves the screenshot in test-artifacts/, and copies it.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest -q -p no:randomly -p no:cacheprovider \
  tests/integration/observability/test_dashboard_offline_demo.py
mkdir -p docs/images
cp test-artifacts/dashboard-offline-demo.png docs/images/dashboard-offline-demo.png
echo "wrote docs/images/dashboard-offline-demo.png"
