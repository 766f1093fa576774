"""The Celery side of :mod:`tests.apps.sse_app`, for a worker in a
subprocess: ``celery -A tests.apps.worker_app:celery worker``, configured
from ``SSE_APP_CONFIG`` as the web processes are."""

from __future__ import annotations

from tests.apps.sse_app import create_app

app = create_app()
celery = app.extensions["notifications"].get_celery(app)
