#!/usr/bin/env bash
# Local Kafka-protocol broker for churnstream: tansu 0.6.0 from crates.io.
#
#   scripts/broker.sh install          build tansu into the cache prefix if it is missing (~12-20 min once)
#   scripts/broker.sh start DIR        start on 127.0.0.1:<free port>, wait for metadata, create topics;
#                                      writes DIR/broker.env (CHURN_BROKERS=127.0.0.1:PORT) and DIR/broker.pid;
#                                      the broker runs in its own session (no terminal Ctrl-C): stop it
#   scripts/broker.sh stop DIR         stop the broker started in DIR
#   scripts/broker.sh topics BROKER    (re)create the churnstream topics on BROKER (host:port)
#
# Environment: CHURN_CACHE (default ~/.cache/churnstream) holds the tansu install;
# TANSU_STORAGE picks the storage engine: sqlite (default; DIR/tansu.db, durable, and it reports
# high watermarks correctly) or memory (memory://tansu/; under-reports the high watermark of
# idempotent or compressed batches, see README "The local broker"), or any tansu storage URL.
set -euo pipefail

VERSION=0.6.0
CACHE="${CHURN_CACHE:-$HOME/.cache/churnstream}"
PREFIX="$CACHE/tansu-$VERSION"
TANSU="$PREFIX/bin/tansu"

log() { printf '[broker] %s\n' "$*" >&2; }

install_tansu() {
  if [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q "$VERSION"; then
    return 0
  fi
  log "installing tansu $VERSION into $PREFIX (one-time build, takes a while on 2 cores)"
  local t0=$SECONDS
  mkdir -p "$PREFIX"
  cargo install tansu --version "$VERSION" --locked --features dynostore,libsql --root "$PREFIX" >&2
  log "tansu installed in $((SECONDS - t0)) s"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# name:partitions[:config]
TOPICS=(
  "purchases:4" "engagement:4" "feedback:4" "subscriptions:4"
  "churn.alerts:4" "churn.dlq:1" "churn.crm-dlq:1" "churn.scores:4:cleanup.policy=compact"
  "churn.scores-shadow:4:cleanup.policy=compact"
  "churn.state-changelog:4:cleanup.policy=compact" "churn.events:4"
)

create_topics() {
  local broker=$1
  local existing
  existing=$("$TANSU" topic list --broker "tcp://$broker" 2>/dev/null || true)
  for spec in "${TOPICS[@]}"; do
    IFS=: read -r name parts cfg <<<"$spec"
    if grep -q "\"name\":\"$name\"" <<<"$existing"; then continue; fi
    if [ -n "${cfg:-}" ]; then
      "$TANSU" topic create --broker "tcp://$broker" --partitions "$parts" --config "$cfg" "$name" >/dev/null
    else
      "$TANSU" topic create --broker "tcp://$broker" --partitions "$parts" "$name" >/dev/null
    fi
  done
}

start() {
  local dir=$1
  install_tansu
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/broker.pid" ] && kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null; then
    log "already running (pid $(cat "$dir/broker.pid"))"
    return 0
  fi
  local port; port=$(free_port)
  local addr="127.0.0.1:$port"
  local storage="${TANSU_STORAGE:-sqlite}"
  case "$storage" in
    sqlite) storage="sqlite://tansu.db" ;;
    memory) storage="memory://tansu/" ;;
  esac
  # tansu's libsql engine resolves sqlite://NAME relative to its working directory.
  # In a session of its own (setsid): a terminal's Ctrl-C (SIGINT to the foreground process
  # group) must not reach the broker, which has to outlive its clients until whoever started it
  # calls `stop` (scripts/run.sh stops the pipeline first, then the broker; test.sh and the
  # e2e bench stop it on exit). The background subshell is not a process group leader, so
  # setsid execs in place and $! is tansu's pid.
  local detach=()
  if command -v setsid >/dev/null; then detach=(setsid); fi
  (cd "$dir" && exec "${detach[@]}" "$TANSU" broker --listener-url "tcp://$addr" \
    --advertised-listener-url "tcp://$addr" --storage-engine "$storage" \
    </dev/null >"$dir/broker.log" 2>&1) &
  echo $! >"$dir/broker.pid"
  local i
  for i in $(seq 1 100); do
    if "$TANSU" topic list --broker "tcp://$addr" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null; then
      log "tansu exited during start-up:"; cat "$dir/broker.log" >&2; return 1
    fi
    sleep 0.1
  done
  "$TANSU" topic list --broker "tcp://$addr" >/dev/null
  create_topics "$addr"
  echo "CHURN_BROKERS=$addr" >"$dir/broker.env"
  log "tansu $VERSION on $addr (storage $storage, log $dir/broker.log)"
  echo "$addr"
}

stop() {
  local dir=$1
  [ -f "$dir/broker.pid" ] || return 0
  local pid; pid=$(cat "$dir/broker.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/broker.pid" "$dir/broker.env"
}

case "${1:-}" in
  install) install_tansu ;;
  start) start "${2:?usage: broker.sh start DIR}" ;;
  stop) stop "${2:?usage: broker.sh stop DIR}" ;;
  topics) install_tansu; create_topics "${2:?usage: broker.sh topics HOST:PORT}" ;;
  path) echo "$TANSU" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
