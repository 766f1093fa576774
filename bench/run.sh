#!/usr/bin/env bash
# Run every benchmark and write bench/results/ and docs/performance.rst.
#   bench/run.sh            the full run (about ten minutes)
#   bench/run.sh --quick    a smoke run (under two minutes)
# Uses ./.venv if it exists; installs bench/requirements.txt into it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
python -c "import flask_sse, flask_socketio, geventwebsocket, matplotlib, psutil" 2>/dev/null \
  || python -m pip install --quiet --disable-pip-version-check -e . -r bench/requirements.txt
# Thousands of sockets: raise the open-file limit as far as allowed, and
# tell the bench what it was (soft:hard), for the report.
export BENCH_NOFILE_FOUND="$(ulimit -Sn):$(ulimit -Hn)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python -m bench "$@"
