#!/usr/bin/env bash
# Debian/Ubuntu packages the tests use: ClickHouse server (tests start their own instance),
# Prometheus' promtool (alert rule tests), Chromium (dashboard browser test), python3-venv,
# NATS server (JetStream cluster tests), ZooKeeper (replicated ClickHouse tests; the tests start it
# with java). The Kafka-protocol broker (tansu) comes from PyPI with the test dependencies.
# Installs only what is missing; needs root or sudo for that.
set -euo pipefail

need=()
command -v /usr/sbin/clickhouse-server >/dev/null 2>&1 || need+=(clickhouse-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
[ -d /usr/share/zookeeper ] || need+=(zookeeper)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${need[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends keeps chromium's optional extras out; policy-rc.d keeps the packaged
# services from starting (the tests start their own ClickHouse on free ports).
printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
$sudo chmod +x /usr/sbin/policy-rc.d
trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
