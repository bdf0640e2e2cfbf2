#!/usr/bin/env bash
# Two settings of jobcast-bench side by side, in one run: ROUNDS rounds,
# each running every scenario once with each setting, the two alternating
# (and which goes first alternating too), so that a busy moment of the
# machine hits both alike. Prints, per scenario and metric, each side's
# median over its runs without failure with every run in brackets (a
# failed one marked ✗), and B ÷ A.
#
# Usage: bench/side-by-side.sh ROUNDS NAME_A "FLAGS_A" NAME_B "FLAGS_B" "SCENARIO" ...
#   e.g. bench/side-by-side.sh 3 memory "--store memory" sqlite "--store sqlite" \
#          "many-jobs --jobs 1000 --steps 50 --step-ms 20"
# FLAGS are jobcast-bench's global flags (--store, --server-bin, ...); each
# SCENARIO is a subcommand with its flags. Nothing is built.
# Env:   BENCH     the jobcast-bench binary (default: target/release/jobcast-bench)
#        RUNS_DIR   where NAME_A.jsonl and NAME_B.jsonl go (default: a temporary directory)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$#" -lt 6 ]; then
  sed -n '2,16p' "${BASH_SOURCE[0]}" >&2
  exit 2
fi
rounds="$1" name_a="$2" flags_a="$3" name_b="$4" flags_b="$5"
shift 5
bench="${BENCH:-$root/target/release/jobcast-bench}"
out_dir="${RUNS_DIR:-$(mktemp -d)}"
mkdir -p "$out_dir"

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then sides=(a b); else sides=(b a); fi
  echo "== round $round of $rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  for scenario in "$@"; do
    for side in "${sides[@]}"; do
      if [ "$side" = a ]; then name="$name_a" flags="$flags_a"; else name="$name_b" flags="$flags_b"; fi
      # shellcheck disable=SC2086 # the flags' and scenario's words are arguments
      "$bench" $flags --json-out "$out_dir/$name.jsonl" $scenario >/dev/null \
        || echo "a run failed: $name $scenario" >&2
    done
  done
done

echo "runs: $out_dir/$name_a.jsonl $out_dir/$name_b.jsonl"
python3 - "$name_a" "$out_dir/$name_a.jsonl" "$name_b" "$out_dir/$name_b.jsonl" <<'PY'
import json, statistics, sys
name_a, file_a, name_b, file_b = sys.argv[1:5]
def load(path):
    try:
        return [json.loads(line) for line in open(path)]
    except FileNotFoundError:
        return []
sides = {name_a: load(file_a), name_b: load(file_b)}
metrics = [("events", "events_delivered"), ("p50 ms", "latency_p50_ms"), ("p95 ms", "latency_p95_ms"),
           ("p99 ms", "latency_p99_ms"), ("server CPU s", "server_cpu_s"), ("µs CPU/event", "cpu_us_per_event"),
           ("job s", "job_duration_s"), ("creates/s", "creates_per_s"), ("peak RSS MiB", "peak_rss_mib")]
def fmt(value):
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
def cell(runs, key):
    """The median over runs without failure, and every run (a failed one marked ✗)."""
    present = [r.get(key) for r in runs if not r["failures"] and r.get(key) is not None]
    if not present:
        return "–", None
    median = statistics.median(present)
    every = ", ".join(fmt(r.get(key)) + ("✗" if r["failures"] else "") for r in runs)
    return f"{fmt(median)} ({every})", median
labels = dict.fromkeys(run["label"] for runs in sides.values() for run in runs)
failures = []
print(f"| scenario | metric | {name_a} | {name_b} | {name_b} ÷ {name_a} |")
print("|---|---|---|---|---|")
for label in labels:
    by = {name: [r for r in runs if r["label"] == label] for name, runs in sides.items()}
    ok = {name: sum(1 for r in these if not r["failures"]) for name, these in by.items()}
    print(f"| {label} | runs without failure | {ok[name_a]}/{len(by[name_a])} | {ok[name_b]}/{len(by[name_b])} | |")
    for title, key in metrics:
        (text_a, median_a), (text_b, median_b) = (cell(by[name], key) for name in (name_a, name_b))
        if median_a is None and median_b is None:
            continue
        ratio = f"{median_b / median_a:.2f}" if median_a and median_b is not None else "–"
        print(f"| | {title} | {text_a} | {text_b} | {ratio} |")
    failures += [f"{name} {label}: {'; '.join(run['failures'])}" for name, these in by.items() for run in these
                 if run["failures"]]
for failure in failures:
    print(f"\nfailed: {failure}")
loads = [r["load_average"] for runs in sides.values() for r in runs if r.get("load_average") is not None]
if loads:
    print(f"\nload average at the runs' starts: {min(loads):.2f} to {max(loads):.2f}, median {statistics.median(loads):.2f}")
PY
