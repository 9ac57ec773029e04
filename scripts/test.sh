#!/usr/bin/env bash
# Runs every test. Integration tests need a real Kafka-protocol broker: start tansu for the
# duration of the run and hand its address to the tests (CHURN_TEST_BROKERS).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/churn-test-broker.XXXXXX)
trap 'scripts/broker.sh stop "$dir"; rm -rf "$dir"' EXIT
addr=$(scripts/broker.sh start "$dir")
export CHURN_TEST_BROKERS="$addr"
export CHURN_TANSU="$(scripts/broker.sh path)"
echo "[test] broker $addr"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
