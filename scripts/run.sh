#!/usr/bin/env bash
# `make run`: local broker, synthetic data, a trained model, the pipeline, live alerts.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
CUSTOMERS=${CUSTOMERS:-2000}
DAYS=${DAYS:-180}
RATE=${RATE:-20000}
METRICS=${METRICS:-127.0.0.1:9464}
mkdir -p "$RUN_DIR"
cargo build -p churnstream
BIN="${CARGO_TARGET_DIR:-target}/debug/churnstream"
pids=()
cleanup() {
  echo; echo "[run] stopping"
  # SIGTERM, not SIGINT: background jobs of a non-interactive shell ignore SIGINT. churnstream
  # finishes its batch, flushes, stores offsets and exits 0 on SIGTERM.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/broker.sh stop "$RUN_DIR/broker"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Fresh broker each run (memory storage): topics and consumer group start empty.
scripts/broker.sh stop "$RUN_DIR/broker"
BROKERS=$(scripts/broker.sh start "$RUN_DIR/broker")
export CHURN_BROKERS=$BROKERS
if [ ! -f "$RUN_DIR/data/events.jsonl" ]; then
  $BIN generate --customers "$CUSTOMERS" --days "$DAYS" --out "$RUN_DIR/data"
fi
if [ ! -f "$RUN_DIR/model/model.json" ]; then
  mkdir -p "$RUN_DIR/model"
  $BIN train --events "$RUN_DIR/data/events.jsonl" --out "$RUN_DIR/model/model.json" | tee "$RUN_DIR/model/train-summary.json"
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
