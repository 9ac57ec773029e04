#!/usr/bin/env bash
# Runs every test. Integration tests need a real Kafka-protocol broker: start tansu for the
# duration of the run and hand its address to the tests (CHURN_TEST_BROKERS).
#
# The shared broker runs on tansu's sqlite engine (the default of scripts/broker.sh: durable, and
# its high watermarks are right). A second job runs the end-to-end and crash tests again on the
# memory engine, whose under-reported high watermarks (README, "The local broker") the pipeline
# must not depend on; tests/restore.rs covers both engines with private brokers.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/churn-test-broker.XXXXXX)
mem=$(mktemp -d /tmp/churn-test-broker-mem.XXXXXX)
trap 'scripts/broker.sh stop "$dir"; scripts/broker.sh stop "$mem"; rm -rf "$dir" "$mem"' EXIT
addr=$(scripts/broker.sh start "$dir")
export CHURN_TEST_BROKERS="$addr"
export CHURN_TANSU="$(scripts/broker.sh path)"
echo "[test] broker $addr (sqlite)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
if [ $# -eq 0 ]; then
  scripts/broker.sh stop "$dir"
  CHURN_TEST_BROKERS=$(TANSU_STORAGE=memory scripts/broker.sh start "$mem")
  export CHURN_TEST_BROKERS
  echo "[test] memory-engine job: broker $CHURN_TEST_BROKERS"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p churnstream --no-fail-fast --test e2e --test crash --test determinism
  else
    cargo test -p churnstream --no-fail-fast --test e2e --test crash --test determinism
  fi
fi
