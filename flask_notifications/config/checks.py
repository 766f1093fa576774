"""The check of every key, applied once in :meth:`Notifications.init_app`:
:func:`apply_defaults`, then :func:`validate`."""

from __future__ import annotations

import difflib
import warnings
from typing import Any

from flask import Flask

from ..errors import ConfigurationError, ConfigurationWarning
from .defaults import DEFAULT_BACKEND, DEFAULTS, LEGACY_BACKENDS
from .kinds import (
    Check,
    anything,
    boolean,
    integer,
    number,
    optional_text,
    retention,
    retry_policy,
    text,
    urgency,
    url_lists,
    url_prefix,
)
from .urls import amqp_url, check_redis_url, ledger_url, sql_url, vapid_subject

#: The check of every key in :data:`DEFAULTS`.
CHECKS: dict[str, Check] = {
    "NOTIFICATIONS_BACKEND": anything,  # build_backend checks it and lists the choices
    "NOTIFICATIONS_REDIS_URL": check_redis_url,
    "NOTIFICATIONS_AMQP_URL": amqp_url,
    "NOTIFICATIONS_AMQP_LEDGER_URL": check_redis_url,
    "NOTIFICATIONS_AMQP_STREAM_MAX_BYTES": integer(1),
    "NOTIFICATIONS_KEY_PREFIX": text,
    "NOTIFICATIONS_CELERY_QUEUE": optional_text,
    "NOTIFICATIONS_MAX_EVENT_SIZE": integer(0, optional=True),
    "NOTIFICATIONS_HISTORY_SIZE": integer(1),
    "NOTIFICATIONS_HISTORY_TTL": number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_MAX_RETRIES": integer(0),
    "NOTIFICATIONS_RETRY_BACKOFF": number(0.0),
    "NOTIFICATIONS_RETRY_BACKOFF_MAX": number(0.0),
    "NOTIFICATIONS_RETRY_JITTER": boolean,
    "NOTIFICATIONS_PUBLISH_RETRY_POLICY": retry_policy,
    "NOTIFICATIONS_IDEMPOTENCY_TTL": number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_LEDGER_SIZE": integer(1),
    "NOTIFICATIONS_IDEMPOTENCY_WINDOW": number(0.0),
    "NOTIFICATIONS_SEND_CLAIM_TIMEOUT": number(0.0, positive=True),
    "NOTIFICATIONS_CLAIM_TIMEOUT": number(0.0, positive=True),
    "NOTIFICATIONS_OUTBOX_TIMEOUT": number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL": number(0.0, positive=True),
    "NOTIFICATIONS_TIMER_TICK": number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_TIMER_CLAIM_LEASE": number(0.0, positive=True),
    "NOTIFICATIONS_TIMER_CONCURRENCY": integer(1),
    "NOTIFICATIONS_RECONNECT_BACKOFF": number(0.0),
    "NOTIFICATIONS_RECONNECT_BACKOFF_MAX": number(0.0),
    "NOTIFICATIONS_DEAD_LETTER_LIMIT": integer(1),
    "NOTIFICATIONS_SSE_BLUEPRINT": boolean,
    "NOTIFICATIONS_SSE_PUBLIC": boolean,
    "NOTIFICATIONS_SSE_URL_PREFIX": url_prefix(),
    "NOTIFICATIONS_SSE_HEARTBEAT": number(0.0, positive=True),
    "NOTIFICATIONS_SSE_EVENT_NAMES": boolean,
    "NOTIFICATIONS_SSE_RETRY": integer(0),
    "NOTIFICATIONS_SSE_QUEUE_SIZE": integer(1),
    "NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT": integer(1, optional=True),
    "NOTIFICATIONS_SSE_DIRECT_WRITE": boolean,
    "NOTIFICATIONS_SSE_IDLE_LINGER": number(0.0),
    "NOTIFICATIONS_METRICS": boolean,
    "NOTIFICATIONS_METRICS_URL": url_prefix(optional=True),
    "NOTIFICATIONS_METRICS_MAX_HUBS": integer(0),
    "NOTIFICATIONS_METRICS_WORKER_PORT": integer(0, optional=True, maximum=65535),
    "NOTIFICATIONS_METRICS_SYNC_INTERVAL": number(0.0, positive=True),
    "NOTIFICATIONS_HEALTH_BLUEPRINT": boolean,
    "NOTIFICATIONS_HEALTH_URL_PREFIX": url_prefix(),
    "NOTIFICATIONS_INBOX_URL": sql_url,
    "NOTIFICATIONS_INBOX_TABLE": text,
    "NOTIFICATIONS_INBOX_RETENTION": retention,
    "NOTIFICATIONS_INBOX_CONNECT_TIMEOUT": number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT": number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_INBOX_POOL_TIMEOUT": number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_LEDGER": anything,  # build_ledger checks it and lists the choices
    "NOTIFICATIONS_LEDGER_URL": ledger_url,
    "NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY": optional_text,
    "NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT": vapid_subject,
    "NOTIFICATIONS_WEBPUSH_TABLE": text,
    "NOTIFICATIONS_WEBPUSH_ENDPOINTS": anything,  # the subscriptions store checks each pattern
    "NOTIFICATIONS_WEBPUSH_MAX_SUBSCRIPTIONS": integer(1),
    "NOTIFICATIONS_WEBPUSH_TTL": integer(0),
    "NOTIFICATIONS_WEBPUSH_URGENCY": urgency,
    "NOTIFICATIONS_WEBPUSH_TIMEOUT": number(0.0, positive=True),
    "NOTIFICATIONS_APPRISE_TARGETS": url_lists,
    "NOTIFICATIONS_PREFERENCES": boolean,
    "NOTIFICATIONS_PREFERENCES_TABLE": text,
    "NOTIFICATIONS_PREFERENCES_MAX_AGE": number(0.0),
    "NOTIFICATIONS_PREFERENCES_SNAPSHOT_ROWS": integer(0),
}

#: Prefixes of keys that are probably this extension's, misspelt.
_NEAR_PREFIXES = ("NOTIFICATION_", "NOTIFICATIONS-", "NOTIFICATION-", "NOTIFICATIONS")


def apply_defaults(app: Flask) -> None:
    """Set every default on ``app.config`` that the application left unset.

    A blank string (``""``, as an empty environment variable gives it) for a
    key whose default is not a string counts as unset, so it gets the default;
    not for the keys that name a class or alias (``NOTIFICATIONS_BACKEND``,
    ``NOTIFICATIONS_LEDGER``), which refuse it with the list of choices.
    """
    for key, value in DEFAULTS.items():
        if isinstance(value, dict):
            value = dict(value)
        given = app.config.get(key)
        if isinstance(given, str) and not given.strip() and not isinstance(value, str) and CHECKS[key] is not anything:
            app.config[key] = value
        app.config.setdefault(key, value)
    if app.config["NOTIFICATIONS_BACKEND"] is None:
        app.config["NOTIFICATIONS_BACKEND"] = app.config.get("BACKEND") or DEFAULT_BACKEND
    backend = app.config["NOTIFICATIONS_BACKEND"]
    if isinstance(backend, str) and backend in LEGACY_BACKENDS:
        app.config["NOTIFICATIONS_BACKEND"] = LEGACY_BACKENDS[backend]


def _uses_redis(backend: object) -> bool:
    if isinstance(backend, str):
        return "redis" in backend.lower()
    cls = backend if isinstance(backend, type) else type(backend)
    return any(base.__name__ == "RedisPubSub" for base in cls.__mro__)


def validate(app: Flask) -> None:
    """Check every ``NOTIFICATIONS_*`` value of ``app.config`` (after
    :func:`apply_defaults`) and store it normalised: a number given as a
    string becomes that number, ``"none"`` becomes ``None`` where the key
    takes it. Warn about an unknown ``NOTIFICATIONS_*`` key (or one
    spelt ``NOTIFICATION_*``, or in lower case, that means a known key),
    naming the known key it probably means.

    :raises ConfigurationError: a value has the wrong type, is out of range
        or is a malformed URL; the message names the key, the value (a URL's
        password masked) and what is expected.
    """
    config = app.config
    for key, check in CHECKS.items():
        config[key] = _checked(key, config[key], check)
    if config["NOTIFICATIONS_REDIS_URL"] is None and config.get("REDIS_URL") not in (None, ""):
        if _uses_redis(config["NOTIFICATIONS_BACKEND"]):
            _checked("REDIS_URL", config["REDIS_URL"], check_redis_url)
    for key in config:
        if isinstance(key, str):
            _warn_if_unknown(key)


def _warn_if_unknown(key: str) -> None:
    if key in CHECKS:
        return
    if key.startswith("NOTIFICATIONS_"):
        close = difflib.get_close_matches(key, CHECKS, n=1, cutoff=0.8)
        hint = f"did you mean {close[0]}?" if close else "see docs/config.rst for the keys that exist."
    else:
        # The application's own keys (NOTIFICATION_EMAIL) are left alone
        # unless they are one of this extension's, spelt otherwise.
        upper = key.upper().replace("-", "_")
        near = next((prefix for prefix in _NEAR_PREFIXES if upper.startswith(prefix.replace("-", "_"))), None)
        if near is None:
            return
        meant = "NOTIFICATIONS_" + upper[len(near) :].lstrip("_")
        close = difflib.get_close_matches(meant, CHECKS, n=1, cutoff=0.9)
        if not close:
            return
        hint = f"did you mean {close[0]}?"
    warnings.warn(
        f"Flask-Notifications has no setting {key}, so it is ignored; {hint}",
        ConfigurationWarning,
        stacklevel=4,
    )


def _checked(key: str, value: Any, check: Check) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        # A private key, and Apprise URLs (they hold tokens), are never shown.
        secret = "PRIVATE_KEY" in key or key == "NOTIFICATIONS_APPRISE_TARGETS"
        shown = "a value not shown (a secret)" if secret else _shown(value)
        raise ConfigurationError(f"{key} is {shown}, which does not work: expected {exc}.") from None


def _shown(value: Any) -> str:
    """``repr(value)``, with the password of a URL masked."""
    if isinstance(value, str) and "@" in value:
        rest = value.partition("://")[2] if "://" in value else value.lstrip("/")
        authority = rest.split("/", 1)[0].split("?", 1)[0]
        if "@" in authority:
            value = value.replace(authority, "***@" + authority.rpartition("@")[2], 1)
    return repr(value)
