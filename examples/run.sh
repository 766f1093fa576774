#!/usr/bin/env bash
# Run the example application on the embedded default: the in-process
# backend with tasks run in the process, so no Redis, broker or worker is
# needed. It creates (or reuses) ./.venv, installs the package into it, and
# prints the URL to open. PORT=8000 picks another port.
#
# With REDIS_URL set, the application uses Redis instead, and a Celery worker
# must run the consumers: see examples/README.rst.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv" >&2
    "${PYTHON:-python3}" -m venv .venv
  fi
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
installed="$(python -c 'import flask_notifications, os; print(os.path.dirname(os.path.dirname(flask_notifications.__file__)))' 2>/dev/null || true)"
if [ "$installed" != "$root" ] || ! python -c "import sqlalchemy" 2>/dev/null; then
  echo "==> installing Flask-Notifications into $(dirname "$(dirname "$(command -v python)")")" >&2
  if ! python -m pip install --quiet --disable-pip-version-check -e ".[inbox]" >/tmp/flask-notifications-pip.$$ 2>&1; then
    cat /tmp/flask-notifications-pip.$$ >&2
    rm -f /tmp/flask-notifications-pip.$$
    echo "==> installation failed" >&2
    exit 1
  fi
  rm -f /tmp/flask-notifications-pip.$$
fi
if [ -n "${REDIS_URL:-}" ]; then
  echo "==> REDIS_URL is set: using Redis at $REDIS_URL; start a worker too:" >&2
  echo "    celery -A examples.app:celery worker -P gevent --loglevel INFO" >&2
fi
exec python examples/app.py "$@"
