#!/usr/bin/env bash
# The memory and the SQLite store side by side, in one run
# (bench/side-by-side.sh): ROUNDS rounds, each running every scenario once
# on each store, the stores alternating. Scenarios: the suite's fan-out
# (10,000 streams, 200 steps at 10 ms), CPU per event (1,000 streams, 2,000
# steps at 0 ms, --publish-interval 0), many jobs (1,000 jobs, one stream
# each) and creates (20,000 one-step jobs from 32 clients). Prints the
# medians per scenario and store, every run, and SQLite ÷ memory.
#
# Usage: bench/compare-stores.sh [ROUNDS]     (default 3; release build)
# Env:   RUNS_DIR   where the runs' JSON lines go (default: a temporary directory)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
cargo build --release -p jobcast --bin jobcast
cargo build --release -p jobcast-bench

exec bench/side-by-side.sh "$rounds" memory "--store memory" sqlite "--store sqlite" \
  "fanout --subscribers 10000 --steps 200 --step-ms 10" \
  "fanout --subscribers 1000 --steps 2000 --step-ms 0 --publish-interval-ms 0" \
  "many-jobs --jobs 1000 --steps 50 --step-ms 20" \
  "creates --creates 20000 --concurrency 32"
