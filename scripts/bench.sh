#!/usr/bin/env bash
# `make bench`: every benchmark prints one JSON line and writes target/bench/<name>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench
cargo bench --workspace 2>/dev/null | grep '^{' | tee target/bench/all.jsonl
