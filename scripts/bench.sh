#!/usr/bin/env bash
# `make bench`: build the benchmarks in release (cargo's bench profile), run each once, and write
# every JSON line it prints to target/bench/<name>.json (one file per benchmark name; a summary of
# all lines goes to target/bench/all.jsonl). A benchmark's stderr goes to target/bench/<bench>.log.
#
#   BENCHES="inprocess state_memory" make bench    run a subset (names below)
#
# Benchmarks (each a `harness = false` main printing one JSON line per measurement):
#   churn-pipeline/inprocess      decode → … → alert decision via Engine::ingest, ~1 M events
#   churn-pipeline/state_memory   state bytes per customer at 1 M customers
#   churnstream/e2e_broker        through a local tansu broker (starts and stops its own)
#   churnstream/restore           restore of 1 M customers × 10 versions from an uncompacted changelog
#   churn-model/train             logistic training on 1 M × 30 rows (~2 min)
#   churn-features/features       rollups + polars feature table from 10 M events
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench
mkdir -p "$out"

declare -A PKG=(
  [inprocess]=churn-pipeline
  [state_memory]=churn-pipeline
  [e2e_broker]=churnstream
  [restore]=churnstream
  [train]=churn-model
  [features]=churn-features
)
BENCHES=${BENCHES:-"inprocess state_memory e2e_broker restore features train"}

# Build everything first so compile output does not interleave with measurements.
for b in $BENCHES; do
  [ -n "${PKG[$b]:-}" ] || { echo "unknown benchmark '$b' (known: ${!PKG[*]})" >&2; exit 2; }
done
# Select every bench package in every cargo call: features are unified over the selected
# packages, so a run with a different selection would rebuild polars in release first.
all_pkgs=(-p churn-pipeline -p churnstream -p churn-features -p churn-model)
benches=()
for b in $BENCHES; do benches+=(--bench "$b"); done
cargo bench --no-run "${all_pkgs[@]}" "${benches[@]}"

: >"$out/all.jsonl"
failed=0
for b in $BENCHES; do
  echo "[bench] running $b (log: $out/$b.log)" >&2
  if ! cargo bench -q "${all_pkgs[@]}" --bench "$b" 2>"$out/$b.log" | grep '^{' >"$out/$b.lines"; then
    echo "[bench] $b FAILED; last lines of its log:" >&2
    tail -n 20 "$out/$b.log" >&2
    failed=1
    continue
  fi
  while IFS= read -r line; do
    name=$(sed -n 's/.*"name":"\([^"]*\)".*/\1/p' <<<"$line")
    [ -n "$name" ] || name=$b
    printf '%s\n' "$line" >"$out/$name.json"
    printf '%s\n' "$line" | tee -a "$out/all.jsonl"
  done <"$out/$b.lines"
  rm -f "$out/$b.lines"
done
exit "$failed"
