#!/usr/bin/env bash
# `make run`: local broker, synthetic data, a trained model, the pipeline, live alerts.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
CUSTOMERS=${CUSTOMERS:-2000}
DAYS=${DAYS:-180}
RATE=${RATE:-20000}
METRICS=${METRICS:-127.0.0.1:9464}
PROGRESS_SECONDS=${PROGRESS_SECONDS:-30}
mkdir -p "$RUN_DIR"
BIN="${CARGO_TARGET_DIR:-target}/debug/churnstream"
TANSU=$(scripts/broker.sh path)
say() { printf '[run] %s\n' "$*"; }
have_broker() { [ -x "$TANSU" ] && "$TANSU" --version >/dev/null 2>&1; }
if ! have_broker; then
  if [ -x "$BIN" ]; then
    say "first run: builds the local broker (~16 min on 2 cores, once), then starts; progress below."
  else
    say "first run: builds churnstream (~4 min on 2 cores), then the local broker (~16 min, once):"
    say "about 20 min before the first alert; later runs start in seconds. Progress below."
  fi
fi

if [ -x "$BIN" ]; then
  say "building churnstream (cargo build -p churnstream: seconds when nothing changed)"
else
  say "building churnstream (cargo build -p churnstream, debug: ~4 min on 2 cores the first time)"
fi
cargo build -p churnstream

ticker=""
# The broker's one-time build, told: what, why, how long; cargo's output to a log, a progress line
# every PROGRESS_SECONDS. In the foreground, so Ctrl-C stops cargo as usual.
build_broker() {
  local log="$RUN_DIR/broker-build.log" t0=$SECONDS
  say "building the local Kafka-protocol broker: tansu 0.6.0 from crates.io (cargo install, release)"
  say "  why: \`make run\` and \`make test\` need a real Kafka-protocol broker; tansu is one Rust binary (no JVM)"
  say "  how long: ~16 min on 2 cores (about 410 crates), once: cached in $(dirname "$(dirname "$TANSU")")"
  say "  cargo's output: $log"
  (
    while :; do
      for _ in $(seq "$PROGRESS_SECONDS"); do sleep 1 </dev/null >/dev/null 2>&1; done
      local n last e=$((SECONDS - t0))
      n=$(grep -c 'Compiling ' "$log" 2>/dev/null || true)
      last=$(grep 'Compiling ' "$log" 2>/dev/null | tail -n 1 | sed 's/.*Compiling //; s/ (.*//' || true)
      say "broker build: $((e / 60))m$(printf %02d $((e % 60)))s, ${n:-0} of ~410 crates compiled${last:+ (now: $last)}"
    done
  ) &
  ticker=$!
  local rc=0
  scripts/broker.sh install >"$log" 2>&1 || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  ticker=""
  local e=$((SECONDS - t0))
  if [ "$rc" != 0 ]; then
    say "broker build failed after $((e / 60))m$(printf %02d $((e % 60)))s; the end of $log:"
    tail -n 30 "$log"
    exit "$rc"
  fi
  say "broker ready: tansu built in $((e / 60))m$(printf %02d $((e % 60)))s ($TANSU)"
}

pids=()
# Stop order: the pipeline, replay and tail first, the broker last. The broker runs in a session
# of its own (scripts/broker.sh), so the terminal's Ctrl-C reaches only this script and its
# clients; were it stopped first, the pipeline would retry a dead broker (AllBrokersDown) until
# its delivery timeout instead of finishing its batch.
cleanup() {
  trap '' INT TERM HUP # a second Ctrl-C must not cut the cleanup short and orphan the broker
  if [ -n "$ticker" ]; then kill "$ticker" 2>/dev/null || true; fi
  echo; echo "[run] stopping"
  # SIGTERM, not SIGINT: background jobs of a non-interactive shell ignore SIGINT. churnstream
  # finishes its batch, flushes, stores offsets and exits 0 on SIGTERM.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  local t0=$SECONDS
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && [ $((SECONDS - t0)) -lt 30 ]; do sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      echo "[run] pid $p still running after 30 s: SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  [ ${#pids[@]} -eq 0 ] || echo "[run] pipeline stopped in $((SECONDS - t0)) s; stopping the broker"
  scripts/broker.sh stop "$RUN_DIR/broker"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
have_broker || build_broker
# Fresh broker each run (sqlite storage, scripts/broker.sh's default: it reports high watermarks
# correctly and survives a broker restart): topics and consumer group start empty, since the
# replay below publishes the whole history again.
scripts/broker.sh stop "$RUN_DIR/broker"
rm -f "$RUN_DIR"/broker/tansu.db "$RUN_DIR"/broker/tansu.db-*
BROKERS=$(scripts/broker.sh start "$RUN_DIR/broker")
export CHURN_BROKERS=$BROKERS
if [ ! -f "$RUN_DIR/data/events.jsonl" ]; then
  $BIN generate --customers "$CUSTOMERS" --days "$DAYS" --out "$RUN_DIR/data"
fi
if [ ! -f "$RUN_DIR/model/model.json" ]; then
  mkdir -p "$RUN_DIR/model"
  # A model of "who will leave within 14 days" (a 30-day silence starting within 14 days of the
  # observation date), so live alerts come before customers go quiet (README "How to read lead
  # time"); `train`'s default label (--within-days 0) also counts customers already gone quiet.
  # Histories shorter than 150 days leave no room for that label's purge gaps: the plain label.
  within=14
  if [ "$DAYS" -lt 150 ]; then within=0; fi
  $BIN train --events "$RUN_DIR/data/events.jsonl" --within-days "$within" --out "$RUN_DIR/model/model.json" | tee "$RUN_DIR/model/train-summary.json"
fi
# tansu answers a fetch only after fetch.wait.max.ms (librdkafka default 500 ms) even when records
# wait; Kafka answers at once. Ask it to wait at most 10 ms (README "The local broker").
CHURN__KAFKA__CONSUMER__FETCH_WAIT_MAX_MS=10 \
  $BIN run --model "$RUN_DIR/model/model.json" --metrics-listen "$METRICS" 2>"$RUN_DIR/pipeline.log" &
pids+=($!)
$BIN replay --events "$RUN_DIR/data/events.jsonl" --rate "$RATE" 2>"$RUN_DIR/replay.log" &
pids+=($!)
cat <<MSG

  broker   : $BROKERS (tansu, log $RUN_DIR/broker/broker.log)
  metrics  : http://$METRICS/metrics   (also /healthz, /readyz)
  alerts   : topic churn.alerts (printed below), latest scores: churn.scores
  logs     : $RUN_DIR/pipeline.log, $RUN_DIR/replay.log
  Ctrl-C stops everything.

MSG
$BIN tail --topic churn.alerts &
pids+=($!)
wait "${pids[0]}"
