#!/usr/bin/env bash
# Rebuild every data file in notebooks-data/ with the real churnstream CLI. Deterministic: the same
# code gives byte-identical files (fixed seeds; SOURCE_DATE_EPOCH pins the model's created_at;
# gzip -n stores no name or time). Run from anywhere: notebooks-data/regenerate.sh
#
# Knobs (defaults give a few MB in total): CUSTOMERS=300 DAYS=180 SEED=42
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
CUSTOMERS="${CUSTOMERS:-300}"
DAYS="${DAYS:-180}"
SEED="${SEED:-42}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1767225600}" # 2026-01-01T00:00:00Z
export RUST_LOG="${RUST_LOG:-warn}"

cargo build -q --manifest-path "$root/Cargo.toml" -p churnstream
bin="${CARGO_TARGET_DIR:-$root/target}/debug/churnstream"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$here"
"$bin" generate --customers "$CUSTOMERS" --days "$DAYS" --seed "$SEED" --out "$tmp"
gzip -n -9 -c "$tmp/events.jsonl" > events.jsonl.gz
cp "$tmp/labels.csv" labels.csv

# The ingest's validator must accept every line (exits 1 otherwise).
"$bin" validate --events events.jsonl.gz > "$tmp/validate.json"

"$bin" features --out features.csv
"$bin" train --events events.jsonl.gz --out model.json --seed "$SEED" \
    --export-training-set training_set.csv > train_summary.json
"$bin" evaluate --events events.jsonl.gz --model model.json \
    --scores-out scores.csv > evaluation.json

ls -l events.jsonl.gz labels.csv features.csv training_set.csv scores.csv model.json \
    train_summary.json evaluation.json
