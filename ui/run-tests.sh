#!/usr/bin/env bash
# Real-browser tests of the dashboard: Debian's chromium driven by
# playwright-core, against a real jobcast server.
#
#   bash ui/run-tests.sh PATH_TO_JOBCAST_BINARY
#
# Installs chromium and openssl (apt-get) and the node dependencies (npm ci)
# when they are missing, starts the server on a free loopback port, runs
# `node --test`, and stops every server it started on exit (the HTTP/2 test
# starts and stops its own HTTPS server). The reconnect test stops the server
# and starts it again on the same port; the current server's pid is kept in a
# pid file so that the exit trap stops whichever one is running. Screenshots
# land in ui/test-output/; with JOBCAST_UPDATE_SCREENSHOTS=1 the ones shown in
# the README are copied to docs/. Ends with a line `N passed, N failed`.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: bash ui/run-tests.sh PATH_TO_JOBCAST_BINARY" >&2
  exit 2
fi
bin="$(realpath "$1")"
[[ -x "$bin" ]] || { echo "not an executable: $1" >&2; exit 2; }

ui_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$ui_dir")"
out_dir="$ui_dir/test-output"
rm -rf "$out_dir"
mkdir -p "$out_dir"

# openssl makes the self-signed certificate of the HTTP/2 test.
if [[ ! -x /usr/bin/chromium ]] || ! command -v openssl >/dev/null; then
  echo "installing chromium and openssl…"
  export DEBIAN_FRONTEND=noninteractive
  apt_get=(apt-get)
  [[ $(id -u) -eq 0 ]] || apt_get=(sudo apt-get)
  "${apt_get[@]}" update -qq >/dev/null
  "${apt_get[@]}" install -y -qq chromium openssl >/dev/null
fi

(cd "$ui_dir" && npm ci --no-audit --no-fund --loglevel=error)

pidfile="$out_dir/server.pid"
stop_server() {
  if [[ -s "$pidfile" ]]; then
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

port="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
export JOBCAST_TEST_BIN="$bin"
export JOBCAST_TEST_ADDR="127.0.0.1:$port"
export JOBCAST_TEST_URL="http://127.0.0.1:$port"
export JOBCAST_TEST_PIDFILE="$pidfile"
export JOBCAST_TEST_LOG="$out_dir/server.log"
export JOBCAST_TEST_OUTPUT="$out_dir"
# Short reconnect hints and grace keep the tests fast; room for the load test.
# The clients' kinds file adds an external kind, for the worker token test.
# Jobs live in a fresh database, as by default, so a restart keeps them.
rm -f "$out_dir"/jobs.db "$out_dir"/jobs.db-wal "$out_dir"/jobs.db-shm
export JOBCAST_TEST_ARGS="--store sqlite:$out_dir/jobs.db --retry 1000ms --cancel-grace 3s --max-running 400 --log warn --config $ui_dir/../clients/kinds.toml"

# shellcheck disable=SC2086 # the arguments are split on purpose
"$bin" --listen "$JOBCAST_TEST_ADDR" $JOBCAST_TEST_ARGS >>"$JOBCAST_TEST_LOG" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 100); do
  if node -e 'fetch(process.argv[1]).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' \
    "$JOBCAST_TEST_URL/readyz"; then
    break
  fi
  sleep 0.1
done

status=0
(cd "$ui_dir" && node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$out_dir/results.tap" \
  tests/) || status=$?

passed="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out_dir/results.tap" | tail -1)"
failed="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out_dir/results.tap" | tail -1)"
passed="${passed:-0}"
failed="${failed:-0}"
if [[ $status -ne 0 && $failed -eq 0 ]]; then
  failed=1 # the runner itself failed (a crash, or no test ran)
fi
if [[ $passed -eq 0 ]]; then
  status=1
fi

if [[ "${JOBCAST_UPDATE_SCREENSHOTS:-}" == 1 && $status -eq 0 ]]; then
  mkdir -p "$repo_dir/docs"
  for name in desktop mobile-360 detail; do
    cp "$out_dir/$name.png" "$repo_dir/docs/dashboard-$name.png"
  done
  echo "copied screenshots to docs/"
fi

echo "$passed passed, $failed failed"
[[ $status -eq 0 && $failed -eq 0 ]]
