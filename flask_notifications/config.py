"""Every configuration key of Flask-Notifications and its default.

The defaults are applied once, in :meth:`Notifications.init_app`, with
``app.config.setdefault``; docs/config.rst documents each key.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

#: The backend used when neither ``NOTIFICATIONS_BACKEND`` nor the original
#: documentation's ``BACKEND`` key is set.
DEFAULT_BACKEND = "flask_notifications.pubsub.redis_pubsub.RedisPubSub"

DEFAULTS: dict[str, Any] = {
    # Pub/sub backend: a class, an instance, an alias (redis, memory, amqp) or
    # a dotted path. ``BACKEND`` (the original key) is honoured when this is
    # unset.
    "NOTIFICATIONS_BACKEND": None,
    # Redis server of the Redis backend; falls back to REDIS_URL.
    "NOTIFICATIONS_REDIS_URL": None,
    # AMQP server of the AMQP backend; falls back to the Celery broker URL
    # when that is an AMQP URL.
    "NOTIFICATIONS_AMQP_URL": None,
    # Redis URL where the AMQP backend keeps idempotency claims and dead
    # letters, shared by every process; None keeps them in the memory of each
    # process (a warning is logged), as RabbitMQ has no place for them.
    "NOTIFICATIONS_AMQP_LEDGER_URL": None,
    # Prefix of every key, channel and exchange the backends create.
    "NOTIFICATIONS_KEY_PREFIX": "notifications",
    # Largest accepted event, in bytes of its JSON form.
    "NOTIFICATIONS_MAX_EVENT_SIZE": 64 * 1024,
    # Events kept per hub for Last-Event-ID replay (approximate bound).
    "NOTIFICATIONS_HISTORY_SIZE": 1000,
    # Seconds an event stays in the replay history; None keeps it until the
    # size bound trims it.
    "NOTIFICATIONS_HISTORY_TTL": 24 * 3600,
    # Attempts of a failing consumer after the first one.
    "NOTIFICATIONS_MAX_RETRIES": 5,
    # Exponential backoff between attempts: base and cap, in seconds. A
    # random jitter of up to the full delay is applied ("full jitter").
    "NOTIFICATIONS_RETRY_BACKOFF": 2.0,
    "NOTIFICATIONS_RETRY_BACKOFF_MAX": 600.0,
    "NOTIFICATIONS_RETRY_JITTER": True,
    # How long :meth:`Notifications.send` keeps trying to reach the broker
    # before it raises BrokerUnavailableError (kombu retry policy).
    "NOTIFICATIONS_PUBLISH_RETRY_POLICY": {
        "max_retries": 2,
        "interval_start": 0.0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    },
    # Seconds an idempotency record of (event id, consumer) is kept, so a
    # redelivered task does not repeat its effect.
    "NOTIFICATIONS_IDEMPOTENCY_TTL": 7 * 24 * 3600,
    # Seconds a consumer may hold its in-progress claim before another
    # delivery of the same task may take over (a crashed worker's claim).
    "NOTIFICATIONS_CLAIM_TIMEOUT": 300,
    # Backoff of a subscription that lost its server (Redis or AMQP): the
    # first wait, doubled after each failed attempt up to the maximum, in
    # seconds. get() raises BackendError meanwhile and never spins.
    "NOTIFICATIONS_RECONNECT_BACKOFF": 0.1,
    "NOTIFICATIONS_RECONNECT_BACKOFF_MAX": 5.0,
    # Dead letters kept (the oldest are dropped beyond this bound).
    "NOTIFICATIONS_DEAD_LETTER_LIMIT": 10000,
    # Register the blueprint that serves GET <prefix>/<hub_id>/events
    # (endpoint "notifications.events"); off, so an application chooses
    # where its streams live and who may read them.
    "NOTIFICATIONS_SSE_BLUEPRINT": False,
    # Serve the blueprint's streams with no stream_authorizer on purpose:
    # without one, the first stream logs a warning that every hub is public.
    "NOTIFICATIONS_SSE_PUBLIC": False,
    # URL prefix of that blueprint.
    "NOTIFICATIONS_SSE_URL_PREFIX": "/notifications",
    # Seconds between comment heartbeats on an idle stream, so proxies and
    # load balancers keep it open and a dead client is noticed.
    "NOTIFICATIONS_SSE_HEARTBEAT": 20.0,
    # Milliseconds a browser waits before it reconnects (the SSE "retry:").
    "NOTIFICATIONS_SSE_RETRY": 3000,
    # Events buffered per connection; a client that falls further behind is
    # disconnected, and resumes from the history with Last-Event-ID.
    "NOTIFICATIONS_SSE_QUEUE_SIZE": 512,
    # Open streams allowed per client address in one process (429 beyond);
    # None for no limit. Behind a proxy, apply werkzeug's ProxyFix so the
    # address is the client's, not the proxy's.
    "NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT": 20,
    # Under gunicorn -k gevent, write events straight to the streams'
    # sockets from the fan-out instead of through the WSGI response. Turn
    # it off behind a middleware that rewrites response bodies (compression),
    # or with gunicorn --protocol uwsgi, whose bodies are not chunked.
    "NOTIFICATIONS_SSE_DIRECT_WRITE": True,
}


def apply_defaults(app: Flask) -> None:
    """Set every default on ``app.config`` that the application left unset."""
    for key, value in DEFAULTS.items():
        if isinstance(value, dict):
            value = dict(value)
        app.config.setdefault(key, value)
    if app.config["NOTIFICATIONS_BACKEND"] is None:
        app.config["NOTIFICATIONS_BACKEND"] = app.config.get("BACKEND") or DEFAULT_BACKEND
