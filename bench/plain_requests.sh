#!/usr/bin/env bash
# What the worker class costs ordinary requests: wrk against one
# `gunicorn -k flask_notifications.gunicorn.GeventWorker` worker serving the
# tests' SSE app, on a trivial JSON view (/stats), with `Connection: close`
# (a new connection per request, as behind a proxy speaking HTTP/1.0) and with
# keep-alive; each checkout in turn, ROUNDS times, so that they alternate.
#
#   bench/plain_requests.sh [OTHER_CHECKOUT ...]
#
# OTHER_CHECKOUT: another copy of the repository to compare (a worktree of an
# earlier commit: git worktree add --detach /tmp/before <commit>). Needs wrk
# (Debian's package) and the Redis at REDIS_URL; uses ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk > /dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
# shellcheck disable=SC1091
[ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ] && source .venv/bin/activate
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
ROUNDS="${ROUNDS:-2}"
config=$(python -c "import json; from tests.helpers import make_config; \
print(json.dumps(make_config('$REDIS_URL', 'plain-requests', NOTIFICATIONS_BACKEND='redis', SECRET_KEY='bench')))")
checkouts=("$PWD" "$@")
for round in $(seq "$ROUNDS"); do
  for checkout in "${checkouts[@]}"; do
    port=$(python -c "from tests.helpers import free_port; print(free_port())")
    (cd "$checkout" && SSE_APP_CONFIG="$config" PYTHONPATH="$checkout" exec python -m gunicorn \
      -k flask_notifications.gunicorn.GeventWorker -w 1 -b "127.0.0.1:$port" --log-level warning \
      "tests.apps.sse_app:create_app()") 2> /dev/null &
    server=$!
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/stats" && break; sleep 0.2; done
    wrk -t1 -c20 -d3s "http://127.0.0.1:$port/stats" > /dev/null  # warm-up
    close=$(wrk -t1 -c20 -d8s -H "Connection: close" "http://127.0.0.1:$port/stats" | awk '/Requests\/sec/ {print $2}')
    alive=$(wrk -t1 -c20 -d8s "http://127.0.0.1:$port/stats" | awk '/Requests\/sec/ {print $2}')
    echo "round $round  $(git -C "$checkout" rev-parse --short HEAD)  requests/s: Connection: close $close, keep-alive $alive"
    kill "$server"
    wait "$server" 2> /dev/null || true
  done
done
