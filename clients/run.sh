#!/usr/bin/env bash
# Real clients against a real jobcast server: the spec linter, schemathesis,
# a generated Python client, a generated TypeScript client and Node's
# EventSource.
#
#   bash clients/run.sh PATH_TO_JOBCAST_BINARY
#
# Installs its pinned tools into clients/.venv and clients/node_modules (only
# when requirements.txt / package-lock.json changed), generates the Python
# client into clients/generated/ and the TypeScript types into
# clients/typescript/generated/ (compiling the TypeScript test program into
# clients/out/typescript/), starts the server on a free loopback port
# with short settings, runs every check, stops the server, and prints
# `N passed, N failed` last. Exits non-zero if anything failed. Logs of each
# check are in clients/out/.
#
# Environment: ST_SEED (schemathesis seed, default random), ST_ARGS (extra
# schemathesis arguments, e.g. "--max-examples 5").
set -uo pipefail

if [[ $# -ne 1 || ! -x "$1" ]]; then
    echo "usage: bash clients/run.sh PATH_TO_JOBCAST_BINARY" >&2
    exit 2
fi
BINARY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
HERE="$(cd "$(dirname "$0")" && pwd)"
SPEC="$HERE/../openapi.yaml"
OUT="$HERE/out"
cd "$HERE"
rm -rf "$OUT"
mkdir -p "$OUT"

SYSTEM_PYTHON="$(command -v python3)"
export PATH="$HERE/.venv/bin:$HERE/node_modules/.bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1
export NO_COLOR=1

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1"; }
show_log() { sed 's/^/    | /' "$1" | tail -n "${2:-40}"; }

# check NAME COMMAND...: one check, its output in out/NAME.log.
check() {
    local name="$1"
    shift
    local start=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then
        LAST_OK=1
        pass "$name ($((SECONDS - start)) s)"
    else
        LAST_OK=0
        fail "$name ($((SECONDS - start)) s; log: clients/out/$name.log)"
        show_log "$OUT/$name.log"
    fi
}

finish() {
    echo "$PASSED passed, $FAILED failed"
    [[ $FAILED -eq 0 ]]
    exit
}

# ---------------------------------------------------------------- tools
stamp() { cat "$@" | sha256sum | cut -d' ' -f1; }

install_python() {
    local want
    want="$(stamp requirements.txt)-$("$SYSTEM_PYTHON" --version)"
    if [[ -f .venv/.installed && "$(cat .venv/.installed)" == "$want" ]]; then
        return 0
    fi
    rm -rf .venv
    "$SYSTEM_PYTHON" -m venv .venv &&
        .venv/bin/pip install --quiet --no-input -r requirements.txt &&
        echo "$want" >.venv/.installed
}

install_node() {
    local want
    want="$(stamp package-lock.json)-$(node --version)"
    if [[ -f node_modules/.installed && "$(cat node_modules/.installed)" == "$want" ]]; then
        return 0
    fi
    npm ci --no-audit --no-fund --loglevel=error &&
        echo "$want" >node_modules/.installed
}

start=$SECONDS
if install_python >"$OUT/install-python.log" 2>&1 && install_node >"$OUT/install-node.log" 2>&1; then
    echo "tools ready ($((SECONDS - start)) s)"
else
    fail "install tools (logs: clients/out/install-*.log)"
    show_log "$OUT/install-python.log"
    show_log "$OUT/install-node.log"
    finish
fi

# ---------------------------------------------------------------- static checks
check redocly-lint redocly lint "$SPEC"

generate_client() {
    rm -rf generated
    openapi-python-client generate --path "$SPEC" --output-path generated/jobcast-client --meta setup \
        >"$OUT/generate.out" 2>&1
    local status=$?
    cat "$OUT/generate.out"
    [[ $status -eq 0 ]] || return 1
    # Only the two non-JSON bodies (OpenMetrics text, the YAML spec) may be left out.
    if grep -q "Unable to process\|Unable to parse\|Could not find reference" "$OUT/generate.out" ||
        grep "^WARNING parsing" "$OUT/generate.out" | grep -v -q "GET /metrics \|GET /openapi.yaml "; then
        echo "openapi-python-client could not handle part of the spec (see above)"
        return 1
    fi
    pip install --quiet --no-deps --no-build-isolation --force-reinstall ./generated/jobcast-client
}
check generate-python-client generate_client

# The types as the README generates them (`--default-non-nullable false`: a
# param with a default stays optional), then the test program, strictly.
compile_typescript_client() {
    rm -rf typescript/generated
    openapi-typescript "$SPEC" --default-non-nullable false -o typescript/generated/jobcast.d.ts &&
        tsc --project typescript
}
check compile-typescript-client compile_typescript_client
TYPESCRIPT_COMPILED=$LAST_OK

# ---------------------------------------------------------------- the server
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
# clients/kinds.toml adds one external kind (`ingest`) for the worker
# operations; it declares no command kind, so no generated request runs a
# program.
"$BINARY" --listen "127.0.0.1:$PORT" --store memory --config "$HERE/kinds.toml" --cancel-grace 1s --retry 200ms --keep-alive 250ms --log warn \
    >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
stop_server() {
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null
    fi
    wait "$SERVER_PID" 2>/dev/null
}
trap stop_server EXIT
trap 'exit 130' INT TERM

ready=0
for _ in $(seq 100); do
    if curl -sf "$URL/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ $ready -ne 1 ]]; then
    fail "server ready at $URL/readyz"
    show_log "$OUT/server.log"
    finish
fi
echo "server $BINARY at $URL"

# ---------------------------------------------------------------- schemathesis
run_schemathesis() {
    local seed=()
    [[ -n "${ST_SEED:-}" ]] && seed=(--seed "$ST_SEED")
    # shellcheck disable=SC2086 # ST_ARGS is a list of arguments
    SCHEMATHESIS_HOOKS=schemathesis_hooks schemathesis --config-file schemathesis.toml \
        run "$SPEC" --url "$URL" --checks all --mode all \
        --phases examples,coverage,fuzzing,stateful --no-color \
        --report junit --report-junit-path "$OUT/schemathesis-junit.xml" \
        "${seed[@]}" ${ST_ARGS:-}
}
check schemathesis run_schemathesis
if [[ $LAST_OK -eq 1 ]]; then
    grep -E '^ +(✅|❌|🚫|⏭)|generated|Seed:' "$OUT/schemathesis.log" | sed 's/^/    | /'
fi

# ---------------------------------------------------------------- suites with their own tests
# suite NAME PASS_REGEX FAIL_REGEX COMMAND...: each test of the suite counts as a check.
suite() {
    local name="$1" pass_count_re="$2" fail_count_re="$3"
    shift 3
    local start=$SECONDS status passed failed
    "$@" >"$OUT/$name.log" 2>&1
    status=$?
    passed="$(grep -oP "$pass_count_re" "$OUT/$name.log" | tail -n1)"
    failed="$(grep -oP "$fail_count_re" "$OUT/$name.log" | tail -n1)"
    passed="${passed:-0}"
    failed="${failed:-0}"
    if [[ $status -ne 0 && $failed -eq 0 ]]; then
        failed=1 # it failed without saying which test
    fi
    PASSED=$((PASSED + passed))
    FAILED=$((FAILED + failed))
    grep -E '^(PASS|FAIL) |^(not )?ok [0-9]+ ' "$OUT/$name.log" | sed "s/^/  $name: /"
    if [[ $failed -ne 0 ]]; then
        echo "FAIL $name: $failed failed ($((SECONDS - start)) s; log: clients/out/$name.log)"
        show_log "$OUT/$name.log" 60
    else
        echo "PASS $name: $passed passed ($((SECONDS - start)) s)"
    fi
}
suite python-client-e2e '^\d+(?= passed, \d+ failed$)' '^\d+ passed, \K\d+(?= failed$)' \
    python python/client_e2e.py "$URL"
if [[ $TYPESCRIPT_COMPILED -eq 1 ]]; then
    suite typescript-client-e2e '^# pass \K\d+' '^# fail \K\d+' \
        env JOBCAST_URL="$URL" node --test --test-reporter=tap "$OUT/typescript/client_e2e.js"
fi
suite node-eventsource '^# pass \K\d+' '^# fail \K\d+' \
    env JOBCAST_URL="$URL" node --test --test-reporter=tap node/

# ---------------------------------------------------------------- the server took it all
server_survived() {
    kill -0 "$SERVER_PID" && curl -sf "$URL/healthz" && ! grep -i "panic" "$OUT/server.log"
}
check server-survived server_survived

finish
