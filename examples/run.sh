#!/usr/bin/env bash
# Run the example application on the embedded default: the in-process
# backend with tasks run in the process, so no Redis, broker or worker is
# needed. Set REDIS_URL to run it on Redis with a Celery worker instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
python -m pip install --quiet --disable-pip-version-check -e . 2>&1 | grep -v -e "^WARNING: Location" >&2 || true
exec python examples/app.py "$@"
