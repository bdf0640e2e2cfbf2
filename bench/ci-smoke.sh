#!/usr/bin/env bash
# Smoke test of the load generator against the real jobcast binary: builds
# both in release, then runs a small fan-out (200 streams on one job), the
# same over two HTTP/2 connections (h2c), a small many-jobs run (all on
# --store memory), 500 creates on a fresh SQLite file, and on a Redis of its
# own (redis-server must be installed) a fan-out over two instances and the
# death of one. Fails (non-zero) if a stream invariant breaks: a missing
# terminal event, a duplicate or out-of-order seq, an event after the
# terminal one, or a stream that fails; if a create is not answered 202; or
# if a lost instance's jobs do not all end instance_lost within 1.5 × the
# lease. Latency targets are not judged here: CI machines are shared and
# noisy.
#
# Usage: bench/ci-smoke.sh            (from anywhere in the repository)
# Env:   CARGO_TARGET_DIR             (default: the workspace's target/)
#        BENCH_PROFILE                release (default) or dev, to reuse a debug build
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

profile="${BENCH_PROFILE:-release}"
case "$profile" in
  release) out=release ;;
  dev) out=debug ;;
  *) echo "BENCH_PROFILE must be release or dev" >&2; exit 2 ;;
esac

echo "== building jobcast and jobcast-bench ($profile)"
cargo build --profile "$profile" -p jobcast --bin jobcast
cargo build --profile "$profile" -p jobcast-bench

bin="$target_dir/$out"
results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT

# Pinning needs two cores; on fewer, let the scheduler place both.
pin=()
if [ "$(nproc)" -lt 2 ]; then
  pin=(--server-core -1 --client-core -1)
fi

echo "== fan-out: 200 streams on one job, 40 steps at 5 ms"
timeout 90 "$bin/jobcast-bench" --bin-dir "$bin" --target jobcast "${pin[@]}" \
  --json-out "$results/runs.jsonl" \
  fanout --subscribers 200 --steps 40 --step-ms 5 --delay-ms 1500 >/dev/null

echo "== fan-out over HTTP/2: 200 streams on 2 connections (h2c)"
timeout 90 "$bin/jobcast-bench" --bin-dir "$bin" --target jobcast "${pin[@]}" \
  --json-out "$results/runs.jsonl" --http2-connections 2 \
  fanout --subscribers 200 --steps 40 --step-ms 5 --delay-ms 1500 >/dev/null

echo "== many jobs: 50 jobs, one stream each, 20 steps at 5 ms"
timeout 60 "$bin/jobcast-bench" --bin-dir "$bin" --target jobcast "${pin[@]}" \
  --json-out "$results/runs.jsonl" \
  many-jobs --jobs 50 --steps 20 --step-ms 5 >/dev/null

echo "== creates on the SQLite store: 500 jobs from 8 clients, every answer a 202"
timeout 60 "$bin/jobcast-bench" --bin-dir "$bin" --target jobcast "${pin[@]}" \
  --json-out "$results/runs.jsonl" --store sqlite \
  creates --creates 500 --concurrency 8 >/dev/null

echo "== two instances on Redis: 200 streams over both on a job of the first"
timeout 60 "$bin/jobcast-bench" --bin-dir "$bin" --target jobcast "${pin[@]}" \
  --json-out "$results/runs.jsonl" --store redis --redis-quiet-s 1 \
  fanout --subscribers 200 --steps 40 --step-ms 5 --delay-ms 1500 >/dev/null

echo "== instance lost on Redis: 10 jobs on an instance killed, 5 streams each on the other, lease 1 s"
timeout 60 "$bin/jobcast-bench" --bin-dir "$bin" --target jobcast "${pin[@]}" \
  --json-out "$results/runs.jsonl" --store redis \
  instance-lost --jobs 10 --watchers 5 --lease-ms 1000 >/dev/null

echo "== runs"
cat "$results/runs.jsonl"
echo "smoke: 6 passed, 0 failed"
