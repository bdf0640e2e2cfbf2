#!/usr/bin/env bash
# The memory and the SQLite store side by side, in one run: ROUNDS rounds,
# each running every scenario once on each store, the two stores
# alternating (and which goes first alternating too), so that a busy
# moment of the machine hits both alike. Scenarios: the suite's fan-out
# (10,000 streams, 200 steps at 10 ms), CPU per event (1,000 streams,
# 2,000 steps at 0 ms, --publish-interval 0), many jobs (1,000 jobs, one
# stream each) and creates (20,000 one-step jobs from 32 clients). Prints
# the medians per scenario and store, and SQLite ÷ memory.
#
# Usage: bench/compare-stores.sh [ROUNDS]     (default 3; release build)
# Env:   OUT   where the runs' JSON lines go (default: a temporary file)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
cargo build --release -p jobcast --bin jobcast
cargo build --release -p jobcast-bench
bench="$root/target/release/jobcast-bench"
out="${OUT:-$(mktemp --suffix=.jsonl)}"

scenarios=(
  "fanout --subscribers 10000 --steps 200 --step-ms 10"
  "fanout --subscribers 1000 --steps 2000 --step-ms 0 --publish-interval-ms 0"
  "many-jobs --jobs 1000 --steps 50 --step-ms 20"
  "creates --creates 20000 --concurrency 32"
)
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then stores=(memory sqlite); else stores=(sqlite memory); fi
  echo "== round $round of $rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  for scenario in "${scenarios[@]}"; do
    for store in "${stores[@]}"; do
      # shellcheck disable=SC2086 # the scenario's words are its arguments
      "$bench" --store "$store" --json-out "$out" $scenario >/dev/null || echo "a run failed: $store $scenario" >&2
    done
  done
done

echo "runs: $out"
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
metrics = [("p50 ms", "latency_p50_ms"), ("p99 ms", "latency_p99_ms"), ("server CPU s", "server_cpu_s"),
           ("µs CPU/event", "cpu_us_per_event"), ("job s", "job_duration_s"), ("creates/s", "creates_per_s"),
           ("peak RSS MiB", "peak_rss_mib")]
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
print("| scenario | metric | memory | sqlite | sqlite ÷ memory | runs (m/s) | failed runs |")
print("|---|---|---|---|---|---|---|")
for label in dict.fromkeys(run["label"] for run in runs):
    by = {store: [r for r in runs if r["label"] == label and r.get("store") == store] for store in ("memory", "sqlite")}
    failed = sum(1 for r in by["memory"] + by["sqlite"] if r["failures"])
    for name, key in metrics:
        m, s = median(r.get(key) for r in by["memory"]), median(r.get(key) for r in by["sqlite"])
        if m is None and s is None:
            continue
        ratio = f"{s / m:.2f}" if m and s is not None else "–"
        fmt = lambda v: "–" if v is None else f"{v:.2f}"
        print(f"| {label} | {name} | {fmt(m)} | {fmt(s)} | {ratio} | {len(by['memory'])}/{len(by['sqlite'])} | {failed} |")
loads = [r["load_average"] for r in runs if r.get("load_average") is not None]
if loads:
    print(f"\nload average at the runs' starts: {min(loads):.2f} to {max(loads):.2f}, median {statistics.median(loads):.2f}")
PY
