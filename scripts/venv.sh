#!/usr/bin/env bash
# Create .venv (if needed) and install sluice into it with the locked dependency versions.
# Usage: scripts/venv.sh [pip install arguments; default: -e .]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "sluice needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || {
    echo "python3 -m venv failed: on Debian/Ubuntu install it with: sudo apt-get install python3-venv" >&2
    exit 1
  }
fi
if [ $# -eq 0 ]; then set -- -e .; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements/lock.txt "$@"
