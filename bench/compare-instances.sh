#!/usr/bin/env bash
# Several instances on Redis against one process (issue 13), in one run:
#  1. fan-out of one job to 10,000 (then 1,000) streams, 200 steps at
#     10 ms, and many jobs (1,000 jobs of 50 steps at 20 ms, one stream
#     each), ROUNDS rounds alternating between one process on the memory
#     store and two instances on Redis (the jobs on A, the streams spread
#     over A and B; bench/side-by-side.sh);
#  2. Redis's commands and bytes per stored state in those Redis runs;
#  3. the death of an instance: LOST_ROUNDS runs per lease in LEASES of 100
#     jobs on A with 10 streams each on B, A killed with kill -9 at a random
#     point of its lease: the time from the kill to each stream's
#     instance_lost.
# The servers (jobcast and Redis) are pinned to core 0, the load generator
# to core 1.
#
# Usage: bench/compare-instances.sh [ROUNDS]     (default 3; release build)
# Env:   RUNS_DIR   where the runs' JSON lines go (default: a temporary directory)
#        LEASES    the leases of the instance-lost runs, in ms (default: "2000 10000")
#        LOST_ROUNDS  instance-lost runs per lease (default: ROUNDS)
#        SUBSCRIBERS  the fan-outs' stream counts (default: "10000 1000")
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
leases="${LEASES:-2000 10000}"
lost_rounds="${LOST_ROUNDS:-$rounds}"
subscribers="${SUBSCRIBERS:-10000 1000}"
cargo build --release -p jobcast --bin jobcast
cargo build --release -p jobcast-bench
bench="$root/target/release/jobcast-bench"
out_dir="${RUNS_DIR:-$(mktemp -d)}"
mkdir -p "$out_dir"

fanouts=()
for count in $subscribers; do
  fanouts+=("fanout --subscribers $count --steps 200 --step-ms 10")
done
RUNS_DIR="$out_dir" bench/side-by-side.sh "$rounds" memory "--store memory" redis "--store redis" "${fanouts[@]}" \
  "many-jobs --jobs 1000 --steps 50 --step-ms 20"

for lease in $leases; do
  for round in $(seq 1 "$lost_rounds"); do
    echo "== instance lost, lease $lease ms, run $round of $lost_rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$bench" --store redis --json-out "$out_dir/lost.jsonl" instance-lost --lease-ms "$lease" >/dev/null \
      || echo "a run failed: instance-lost, lease $lease ms" >&2
  done
done

python3 - "$out_dir/redis.jsonl" "$out_dir/lost.jsonl" <<'PY'
import json, statistics, sys
def load(path):
    try:
        return [json.loads(line) for line in open(path)]
    except FileNotFoundError:
        return []
# A failed run's counters are not those of a whole run (e.g. streams that
# connected after the job had started).
redis_runs = [r for r in load(sys.argv[1]) if r.get("redis_per_state") and not r["failures"]]
def runs(values, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.median(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"
for label in dict.fromkeys(r["label"] for r in redis_runs):
    fanouts = [r for r in redis_runs if r["label"] == label]
    print(f"\nRedis per stored state, {label} runs without failure (median, every run in brackets; background subtracted):\n")
    print("| what | per stored state |\n|---|---|")
    per = [r["redis_per_state"] for r in fanouts]
    print(f"| states stored while the job ran | {runs([p['states'] for p in per], 0)} |")
    names = sorted({name for p in per for name in p["commands"]})
    for name in names:
        print(f"| `{name}` | {runs([p['commands'].get(name, 0.0) for p in per])} |")
    print(f"| every command (scripts' calls included) | {runs([p['all_commands'] for p in per])} |")
    print(f"| commands the instances sent (round trips) | {runs([p['sent_commands'] for p in per])} |")
    print(f"| bytes into Redis | {runs([p['input_bytes'] for p in per], 0)} |")
    print(f"| bytes out of Redis | {runs([p['output_bytes'] for p in per], 0)} |")
    print(f"| the state's JSON, bytes | {runs([r.get('state_bytes') for r in fanouts], 0)} |")
    background = [p["background"] for p in per]
    print(f"| background, commands per second | {runs([sum(b['commands'].values()) / b['seconds'] for b in background])} |")
    print("\nWhile the streams connected, the instances sent Redis: "
          + "; ".join(f"{sum(r['redis_while_connecting']['commands'].values())} commands in {r['redis_while_connecting']['seconds']:.1f} s"
                      for r in fanouts))
    print("Once every stream was connected, Redis had: "
          + "; ".join(f"{c['clients']} clients ({c['blocked_clients']} blocked in XREAD), channels {c['channels']}, {c['patterns']} patterns"
                      for c in (r["redis_connections"] for r in fanouts)))
    print("\nServer side per process, CPU s: "
          + ", ".join(f"{name} {runs([p['cpu_s'] for r in fanouts for p in r['processes'] if p['name'] == name])}"
                      for name in ("A", "B", "redis")))
    for instance in ("A", "B"):
        streams = [s for r in fanouts for s in r["instances"] if s["instance"] == instance]
        print(f"streams on {instance}: p50 {runs([s['latency_p50_ms'] for s in streams])} ms, "
              f"p99 {runs([s['latency_p99_ms'] for s in streams])} ms, terminals {[s['terminals'] for s in streams]}")
lost = load(sys.argv[2])
if lost:
    print("\nDeath to instance_lost (kill -9 of A; streams on B):\n")
    print("| lease | runs without failure | median, ms (each run) | max, ms (each run) | streams |\n|---|---|---|---|---|")
    for lease in dict.fromkeys(r["lease_ms"] for r in lost):
        these = [r for r in lost if r["lease_ms"] == lease]
        spreads = [r.get("lost_after_ms") or {} for r in these]
        ok = sum(1 for r in these if not r["failures"])
        print(f"| {lease} ms | {ok}/{len(these)} | {runs([s.get('median') for s in spreads], 0)} | "
              f"{runs([s.get('max') for s in spreads], 0)} | {[s.get('count') for s in spreads]} |")
    for r in lost:
        if r["failures"]:
            print(f"\nfailed: lease {r['lease_ms']} ms: {'; '.join(r['failures'])}")
PY
