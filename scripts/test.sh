#!/usr/bin/env bash
# Runs every test. Integration tests need a real Kafka-protocol broker: start tansu for the
# duration of the run and hand its address to the tests (CHURN_TEST_BROKERS).
#
# The shared broker uses tansu's memory engine. Its sqlite engine (the default of `make run`) gets
# slower with every topic a broker holds — the suite creates ~70 uniquely named ones, after which
# a 20 000-event replay took 52 s instead of 1.3 s on a fresh sqlite broker — so the durable
# engine is covered by the tests that start private brokers (tests/restore.rs on both engines,
# tests/faults.rs, tests/crash.rs, tests/determinism.rs) and by tests/make_run.rs. The memory engine
# also skips the rest of a batch when a fetch starts inside it (README), so tests that restart a
# consumer and count every event run on sqlite. Nothing here trusts the memory engine's reported high
# watermarks (README, "The local broker"): restores read to their own marker, helpers to the
# true end of a log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x "$(scripts/broker.sh path)" ]; then
  echo "[test] first run: building the local Kafka-protocol broker (tansu 0.6.0 from crates.io, ~16 min"
  echo "[test] on 2 cores, once; cached in ${CHURN_CACHE:-$HOME/.cache/churnstream}); cargo's output follows"
fi
dir=$(mktemp -d /tmp/churn-test-broker.XXXXXX)
trap 'scripts/broker.sh stop "$dir"; rm -rf "$dir"' EXIT
addr=$(TANSU_STORAGE=memory scripts/broker.sh start "$dir")
export CHURN_TEST_BROKERS="$addr"
export CHURN_TANSU="$(scripts/broker.sh path)"
echo "[test] broker $addr (memory engine)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
