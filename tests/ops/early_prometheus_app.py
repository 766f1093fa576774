""":mod:`tests.apps.worker_app`, after the application imported
``prometheus_client`` itself, so the extension cannot set up the
multiprocess directory any more."""

from __future__ import annotations

import prometheus_client  # noqa: F401

from tests.apps.worker_app import app, celery

__all__ = ["app", "celery"]
