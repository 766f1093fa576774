"""Every configuration key of Flask-Notifications, its default and its check.

The defaults (:mod:`.defaults`) are applied once, in
:meth:`Notifications.init_app`, with ``app.config.setdefault``, and every
value is checked there too (:mod:`.checks`, with the value checks of
:mod:`.kinds` and the URL checks of :mod:`.urls`); docs/config.rst documents
each key.
"""

from __future__ import annotations

from .checks import CHECKS, apply_defaults, validate
from .defaults import DEFAULT_BACKEND, DEFAULTS, LEGACY_BACKENDS
from .kinds import Check
from .urls import REDIS_SCHEMES, amqp_url, check_redis_url, ledger_url, sql_url

__all__ = [
    "CHECKS",
    "DEFAULTS",
    "DEFAULT_BACKEND",
    "LEGACY_BACKENDS",
    "REDIS_SCHEMES",
    "Check",
    "amqp_url",
    "apply_defaults",
    "check_redis_url",
    "ledger_url",
    "sql_url",
    "validate",
]
