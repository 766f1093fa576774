"""Every configuration key of Flask-Notifications, its default and its check.

The defaults are applied once, in :meth:`Notifications.init_app`, with
``app.config.setdefault``, and every value is checked there too
(:func:`validate`); docs/config.rst documents each key.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from .errors import ConfigurationError, ConfigurationWarning

#: The backend used when neither ``NOTIFICATIONS_BACKEND`` nor the original
#: documentation's ``BACKEND`` key is set.
DEFAULT_BACKEND = "flask_notifications.pubsub.redis_pubsub.RedisPubSub"

#: Backend paths of 0.1 and what replaces them.
LEGACY_BACKENDS = {
    "flask_notifications.backend.redis_backend.RedisBackend": DEFAULT_BACKEND,
}

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
    # The older name of NOTIFICATIONS_LEDGER_URL (a Redis URL for the AMQP
    # backend's claims and dead letters); honoured when that is unset.
    "NOTIFICATIONS_AMQP_LEDGER_URL": None,
    # The ledger, where claims, idempotency keys and dead letters are kept:
    # a class, an instance, an alias (redis, sql, memory) or a dotted path.
    # None chooses: NOTIFICATIONS_LEDGER_URL's kind if set, else the Redis
    # backend's server, the memory backend's process, and for the AMQP
    # backend the application's database (NOTIFICATIONS_INBOX_URL or
    # Flask-SQLAlchemy), else each process's memory (a warning is logged).
    "NOTIFICATIONS_LEDGER": None,
    # Where the ledger is kept: a Redis URL (the Redis ledger), or a
    # SQLAlchemy URL or Engine (the SQL ledger, PostgreSQL or SQLite). None:
    # see NOTIFICATIONS_LEDGER.
    "NOTIFICATIONS_LEDGER_URL": None,
    # Bytes RabbitMQ keeps in each hub's stream queue (AMQP backend).
    "NOTIFICATIONS_AMQP_STREAM_MAX_BYTES": 64 * 1024 * 1024,
    # Prefix of every key, channel and exchange the backends create.
    "NOTIFICATIONS_KEY_PREFIX": "notifications",
    # Celery queue of this extension's dispatch and consumer tasks, declared
    # in the Celery app's task_queues next to its default queue, so that a
    # worker of another Celery app sharing the broker never takes them; None
    # names it after NOTIFICATIONS_KEY_PREFIX.
    "NOTIFICATIONS_CELERY_QUEUE": None,
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
    # Seconds the record of a (delivery, hub, consumer) that ran is kept, so
    # that a task the broker redelivers does not repeat its effect. None
    # takes 2 x (visibility_timeout + NOTIFICATIONS_CLAIM_TIMEOUT +
    # unacked_restore_interval), at least 6 hours (tasks.idempotency_ttl); a
    # message left unacknowledged longer than this may repeat its effect.
    "NOTIFICATIONS_IDEMPOTENCY_TTL": None,
    # Completed consumer records the in-process memory ledger keeps; the least recently
    # written go first. Held claims and idempotency_key records are never
    # evicted before they expire.
    "NOTIFICATIONS_LEDGER_SIZE": 10000,
    # Seconds send(idempotency_key=...) refuses a second send with that key.
    "NOTIFICATIONS_IDEMPOTENCY_WINDOW": 24 * 3600,
    # Seconds a send(idempotency_key=...) holds its key while it enqueues
    # (renewed every third of this while it runs, so only a killed send's
    # hold expires); a concurrent send with the key waits up to this long.
    "NOTIFICATIONS_SEND_CLAIM_TIMEOUT": 10,
    # Seconds a run's claim lasts unless renewed; a running consumer renews
    # it every third of this, so only a dead worker's claim expires, and
    # another run of the same delivery may then take over.
    "NOTIFICATIONS_CLAIM_TIMEOUT": 300,
    # Seconds after which a delivery that no worker took over is enqueued
    # again (the outbox, flask_notifications.worker.outbox); None turns the
    # outbox off. How often each worker looks for such deliveries.
    "NOTIFICATIONS_OUTBOX_TIMEOUT": 60,
    "NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL": 5,
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
    # Name each SSE event after its event_type (addEventListener); False
    # sends unnamed events, as 0.1 did, for pages that use source.onmessage.
    "NOTIFICATIONS_SSE_EVENT_NAMES": True,
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
    # Seconds a process keeps its backend subscription (and its listener)
    # once its last stream closed, so that a page reload does not resubscribe.
    "NOTIFICATIONS_SSE_IDLE_LINGER": 30.0,
    # Export Prometheus metrics (needs the "metrics" extra, prometheus_client):
    # the stream, send and consumer counters of docs/operations.rst. Set
    # PROMETHEUS_MULTIPROC_DIR before the processes start to aggregate
    # several gunicorn workers or a prefork Celery pool; unset, init_app sets
    # up one per process group (ops/metrics_dir.py).
    "NOTIFICATIONS_METRICS": False,
    # Path of the metrics endpoint added to the application; None adds none
    # (mount flask_notifications.ops.metrics.make_wsgi_app() yourself).
    "NOTIFICATIONS_METRICS_URL": "/metrics",
    # Hubs that get a label value of their own, in creation order; the
    # others are counted under hub="other", so label cardinality stays bounded.
    "NOTIFICATIONS_METRICS_MAX_HUBS": 50,
    # Port on which a Celery worker of the application serves its metrics
    # (all its pool processes, in multiprocess mode); None serves none.
    "NOTIFICATIONS_METRICS_WORKER_PORT": None,
    # Seconds between the copies of a process's stream counters into the
    # multiprocess directory (only in multiprocess mode).
    "NOTIFICATIONS_METRICS_SYNC_INTERVAL": 5.0,
    # Register the blueprint that serves <prefix>/live and <prefix>/ready.
    "NOTIFICATIONS_HEALTH_BLUEPRINT": False,
    # URL prefix of that blueprint.
    "NOTIFICATIONS_HEALTH_URL_PREFIX": "/health",
    # The inbox's database: a SQLAlchemy URL or Engine. None uses the app's
    # Flask-SQLAlchemy engine if it has one, else SQLite in the instance folder.
    "NOTIFICATIONS_INBOX_URL": None,
    # The inbox's table (the shipped migration creates the default name).
    "NOTIFICATIONS_INBOX_TABLE": "notifications_inbox",
    # Age (seconds or a timedelta) past which `flask notifications inbox
    # purge` deletes notifications; None keeps them until purged with --days.
    "NOTIFICATIONS_INBOX_RETENTION": None,
    # Seconds the inbox waits to open a database connection (PostgreSQL:
    # libpq's connect_timeout, whole seconds, at least 2); None for no bound.
    # Applied to the engine the inbox creates from NOTIFICATIONS_INBOX_URL.
    "NOTIFICATIONS_INBOX_CONNECT_TIMEOUT": 2,
    # Seconds one statement, commit or pre-ping may take (PostgreSQL:
    # statement_timeout, and a client-side watchdog for a server that does not
    # answer at all; SQLite: the busy timeout); None for no bound. purge() is
    # not bound by it.
    "NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT": 2,
    # Seconds a call waits for a free pooled connection; None for no bound.
    "NOTIFICATIONS_INBOX_POOL_TIMEOUT": 1,
    # Web Push (WebPushConsumer, the "webpush" extra): the VAPID private key
    # (base64url of its 32 bytes, or PEM) and the mailto: or https: URL push
    # services may reach the operator at; `flask notifications webpush
    # generate-keys` makes both lines.
    "NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY": None,
    "NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT": None,
    # The push subscriptions' table, on the inbox's database.
    "NOTIFICATIONS_WEBPUSH_TABLE": "notifications_push_subscriptions",
    # Origins (fnmatch patterns of scheme://host[:port]) a subscription's
    # endpoint may have: the browsers' push services. None allows any https
    # origin; the worker posts to these URLs, so keep the list tight.
    "NOTIFICATIONS_WEBPUSH_ENDPOINTS": (
        "https://fcm.googleapis.com",
        "https://updates.push.services.mozilla.com",
        "https://*.push.apple.com",
        "https://*.notify.windows.com",
    ),
    # Devices kept per user; subscribing one more deletes the oldest.
    "NOTIFICATIONS_WEBPUSH_MAX_SUBSCRIPTIONS": 10,
    # Seconds a push service keeps a message for an offline device, and its
    # urgency (very-low, low, normal, high), unless the consumer or the
    # event (push_ttl, push_urgency) says otherwise.
    "NOTIFICATIONS_WEBPUSH_TTL": 24 * 3600,
    "NOTIFICATIONS_WEBPUSH_URGENCY": "normal",
    # Seconds to wait for a push service's answer.
    "NOTIFICATIONS_WEBPUSH_TIMEOUT": 10.0,
    # AppriseConsumer's targets per hub: {hub label or id: [Apprise URLs]}.
    "NOTIFICATIONS_APPRISE_TARGETS": {},
    # Whether consumer tasks honour the users' preferences (docs/preferences.rst),
    # kept in this table beside the inbox (NOTIFICATIONS_INBOX_URL).
    "NOTIFICATIONS_PREFERENCES": False,
    "NOTIFICATIONS_PREFERENCES_TABLE": "notifications_preferences",
    # Seconds a worker may act on a user's preferences as it read them: a
    # change applies to deliveries that start this long after it, at most.
    "NOTIFICATIONS_PREFERENCES_MAX_AGE": 5.0,
    # A worker copies the whole table while it holds at most this many
    # choices; beyond, only those of the users it delivers to.
    "NOTIFICATIONS_PREFERENCES_SNAPSHOT_ROWS": 50_000,
}


def apply_defaults(app: Flask) -> None:
    """Set every default on ``app.config`` that the application left unset."""
    for key, value in DEFAULTS.items():
        if isinstance(value, dict):
            value = dict(value)
        app.config.setdefault(key, value)
    if app.config["NOTIFICATIONS_BACKEND"] is None:
        app.config["NOTIFICATIONS_BACKEND"] = app.config.get("BACKEND") or DEFAULT_BACKEND
    backend = app.config["NOTIFICATIONS_BACKEND"]
    if isinstance(backend, str) and backend in LEGACY_BACKENDS:
        app.config["NOTIFICATIONS_BACKEND"] = LEGACY_BACKENDS[backend]


# -- checks -------------------------------------------------------------------

#: A check takes a value and returns it normalised (a number given as a
#: string, as environment variables give it, becomes that number), or raises
#: ValueError with what is expected.
Check = Callable[[Any], Any]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _integer(minimum: int = 0, *, optional: bool = False, maximum: int | None = None) -> Check:
    expected = f"an integer of at least {minimum}" + (f" and at most {maximum}" if maximum is not None else "")
    if optional:
        expected += ", or None"

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(expected)
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(expected)
        return value

    return check


def _number(minimum: float = 0.0, *, positive: bool = False, optional: bool = False) -> Check:
    expected = "a number of seconds " + ("greater than" if positive else "of at least") + f" {minimum:g}"
    if optional:
        expected += ", or None"

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(expected) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(expected)
        if value < minimum or (positive and value == minimum):
            raise ValueError(expected)
        return value

    return check


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("True or False")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return _text(value)
    except ValueError:
        raise ValueError("a non-empty string, or None") from None


def _url_prefix(*, optional: bool = False) -> Check:
    expected = "a URL path that starts with '/'" + (", or None" if optional else "")

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or (value and not value.startswith("/")):
            raise ValueError(expected)
        return value

    return check


def _retention(value: Any) -> Any:
    if value is None or isinstance(value, timedelta):
        return value
    try:
        return _number(0.0, positive=True)(value)
    except ValueError:
        raise ValueError("a number of seconds greater than 0, a timedelta, or None") from None


def _retry_policy(value: Any) -> Any:
    expected = "a dict of kombu retry options (max_retries, interval_start, interval_step, interval_max)"
    if not isinstance(value, Mapping):
        raise ValueError(expected)
    known = {"max_retries", "interval_start", "interval_step", "interval_max", "timeout"}
    policy = dict(value)
    for name, item in policy.items():
        if name not in known:
            raise ValueError(f"{expected}; {name!r} is none of them")
        if item is None and name in ("max_retries", "timeout"):
            continue
        try:
            policy[name] = _number(0.0)(item)
        except ValueError:
            raise ValueError(f"{expected}, each a number of at least 0; {name} is {item!r}") from None
    return policy


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
_REDIS_EXPECTED = (
    "a Redis URL: redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path/to/socket, "
    "redis+sentinel://host:port[,host:port...]/<master name>[/<db>] or redis+cluster://host:port[,host:port...]"
)


def check_redis_url(value: Any) -> Any:
    """Parse a Redis URL of a form that
    :func:`~flask_notifications.backends.redis_client.client_from_url`
    connects to, without connecting.

    :raises ValueError: it is none of them; the message says what is expected.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(_REDIS_EXPECTED)
    scheme = value.partition("://")[0].lower() if "://" in value else ""
    if scheme not in _REDIS_SCHEMES:
        raise ValueError(_REDIS_EXPECTED)
    if scheme in ("redis+sentinel", "redis+cluster"):
        parts = urlsplit(value)
        netloc = parts.netloc.rpartition("@")[2]
        for host in netloc.split(","):
            name, sep, port = host.strip().rpartition(":")
            if not (name if sep else port) or (sep and not port.isdigit()):
                raise ValueError(f"{_REDIS_EXPECTED}; {host!r} is not host:port")
        segments = [segment for segment in parts.path.split("/") if segment]
        if scheme == "redis+cluster" and segments not in ([], ["0"]):
            raise ValueError(f"{_REDIS_EXPECTED}; a Redis Cluster has only database 0")
        if scheme == "redis+sentinel" and (
            not segments or len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit())
        ):
            raise ValueError(f"{_REDIS_EXPECTED}; name the master after the sentinels")
        return value
    from redis.connection import parse_url

    try:
        parse_url(value)
        if scheme != "unix":
            parts = urlsplit(value)
            parts.port  # noqa: B018 (a port that is not a number raises ValueError here)
            if not parts.hostname:
                raise ValueError("no host")
            if parts.path.strip("/") and not parts.path.strip("/").isdigit():
                raise ValueError(f"the database {parts.path.strip('/')!r} is not a number")
    except ValueError as exc:
        raise ValueError(f"{_REDIS_EXPECTED} ({exc})") from None
    return value


_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def _amqp_url(value: Any) -> Any:
    expected = "an AMQP URL: amqp://[user:password@]host[:port]/[vhost] (or amqps://, pyamqp://), or None"
    if value is None:
        return None
    if not isinstance(value, str) or value.partition("://")[0].lower() not in _AMQP_SCHEMES or "://" not in value:
        raise ValueError(expected)
    try:
        urlsplit(value).port  # noqa: B018 (a port that is not a number raises ValueError here)
    except ValueError as exc:
        raise ValueError(f"{expected} ({exc})") from None
    return value


def _anything(value: Any) -> Any:
    return value


def _inbox_url(value: Any) -> Any:
    if isinstance(value, str) and "://" not in value:
        raise ValueError("a SQLAlchemy URL such as postgresql+psycopg://user@host/db, an Engine, or None")
    return value


def _urgency(value: Any) -> Any:
    if value not in ("very-low", "low", "normal", "high"):
        raise ValueError("one of very-low, low, normal, high")
    return value


def _mapping(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError("a dict")
    return value


#: The check of every key in :data:`DEFAULTS`.
CHECKS: dict[str, Check] = {
    "NOTIFICATIONS_BACKEND": _anything,  # build_backend checks it and lists the choices
    "NOTIFICATIONS_REDIS_URL": check_redis_url,
    "NOTIFICATIONS_AMQP_URL": _amqp_url,
    "NOTIFICATIONS_AMQP_LEDGER_URL": check_redis_url,
    "NOTIFICATIONS_AMQP_STREAM_MAX_BYTES": _integer(1),
    "NOTIFICATIONS_KEY_PREFIX": _text,
    "NOTIFICATIONS_CELERY_QUEUE": _optional_text,
    "NOTIFICATIONS_MAX_EVENT_SIZE": _integer(0, optional=True),
    "NOTIFICATIONS_HISTORY_SIZE": _integer(1),
    "NOTIFICATIONS_HISTORY_TTL": _number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_MAX_RETRIES": _integer(0),
    "NOTIFICATIONS_RETRY_BACKOFF": _number(0.0),
    "NOTIFICATIONS_RETRY_BACKOFF_MAX": _number(0.0),
    "NOTIFICATIONS_RETRY_JITTER": _boolean,
    "NOTIFICATIONS_PUBLISH_RETRY_POLICY": _retry_policy,
    "NOTIFICATIONS_IDEMPOTENCY_TTL": _number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_LEDGER_SIZE": _integer(1),
    "NOTIFICATIONS_IDEMPOTENCY_WINDOW": _number(0.0),
    "NOTIFICATIONS_SEND_CLAIM_TIMEOUT": _number(0.0, positive=True),
    "NOTIFICATIONS_CLAIM_TIMEOUT": _number(0.0, positive=True),
    "NOTIFICATIONS_OUTBOX_TIMEOUT": _number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL": _number(0.0, positive=True),
    "NOTIFICATIONS_RECONNECT_BACKOFF": _number(0.0),
    "NOTIFICATIONS_RECONNECT_BACKOFF_MAX": _number(0.0),
    "NOTIFICATIONS_DEAD_LETTER_LIMIT": _integer(1),
    "NOTIFICATIONS_SSE_BLUEPRINT": _boolean,
    "NOTIFICATIONS_SSE_PUBLIC": _boolean,
    "NOTIFICATIONS_SSE_URL_PREFIX": _url_prefix(),
    "NOTIFICATIONS_SSE_HEARTBEAT": _number(0.0, positive=True),
    "NOTIFICATIONS_SSE_EVENT_NAMES": _boolean,
    "NOTIFICATIONS_SSE_RETRY": _integer(0),
    "NOTIFICATIONS_SSE_QUEUE_SIZE": _integer(1),
    "NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT": _integer(1, optional=True),
    "NOTIFICATIONS_SSE_DIRECT_WRITE": _boolean,
    "NOTIFICATIONS_SSE_IDLE_LINGER": _number(0.0),
    "NOTIFICATIONS_METRICS": _boolean,
    "NOTIFICATIONS_METRICS_URL": _url_prefix(optional=True),
    "NOTIFICATIONS_METRICS_MAX_HUBS": _integer(0),
    "NOTIFICATIONS_METRICS_WORKER_PORT": _integer(0, optional=True, maximum=65535),
    "NOTIFICATIONS_METRICS_SYNC_INTERVAL": _number(0.0, positive=True),
    "NOTIFICATIONS_HEALTH_BLUEPRINT": _boolean,
    "NOTIFICATIONS_HEALTH_URL_PREFIX": _url_prefix(),
    "NOTIFICATIONS_INBOX_URL": _inbox_url,
    "NOTIFICATIONS_INBOX_TABLE": _text,
    "NOTIFICATIONS_INBOX_RETENTION": _retention,
    "NOTIFICATIONS_INBOX_CONNECT_TIMEOUT": _number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT": _number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_INBOX_POOL_TIMEOUT": _number(0.0, positive=True, optional=True),
    "NOTIFICATIONS_LEDGER": _anything,  # build_ledger checks it and lists the choices
    "NOTIFICATIONS_LEDGER_URL": _inbox_url,  # a Redis or SQLAlchemy URL, or an Engine
    "NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY": _optional_text,
    "NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT": _optional_text,
    "NOTIFICATIONS_WEBPUSH_TABLE": _text,
    "NOTIFICATIONS_WEBPUSH_ENDPOINTS": _anything,  # the subscriptions store checks each pattern
    "NOTIFICATIONS_WEBPUSH_MAX_SUBSCRIPTIONS": _integer(1),
    "NOTIFICATIONS_WEBPUSH_TTL": _integer(0),
    "NOTIFICATIONS_WEBPUSH_URGENCY": _urgency,
    "NOTIFICATIONS_WEBPUSH_TIMEOUT": _number(0.0, positive=True),
    "NOTIFICATIONS_PREFERENCES": _boolean,
    "NOTIFICATIONS_PREFERENCES_TABLE": _text,
    "NOTIFICATIONS_PREFERENCES_MAX_AGE": _number(0.0),
    "NOTIFICATIONS_PREFERENCES_SNAPSHOT_ROWS": _integer(0),
    "NOTIFICATIONS_APPRISE_TARGETS": _mapping,
}


def _uses_redis(backend: object) -> bool:
    if isinstance(backend, str):
        return "redis" in backend.lower()
    cls = backend if isinstance(backend, type) else type(backend)
    return any(base.__name__ == "RedisPubSub" for base in cls.__mro__)


def validate(app: Flask) -> None:
    """Check every ``NOTIFICATIONS_*`` value of ``app.config`` (after
    :func:`apply_defaults`) and store it normalised: a number given as a
    string becomes that number. Warn about an unknown ``NOTIFICATIONS_*``
    key, naming the known key it probably means.

    :raises ConfigurationError: a value has the wrong type, is out of range
        or is a malformed URL; the message names the key, the value and
        what is expected.
    """
    config = app.config
    for key, check in CHECKS.items():
        config[key] = _checked(key, config[key], check)
    if config["NOTIFICATIONS_REDIS_URL"] is None and config.get("REDIS_URL") is not None:
        if _uses_redis(config["NOTIFICATIONS_BACKEND"]):
            _checked("REDIS_URL", config["REDIS_URL"], check_redis_url)
    for key in config:
        if isinstance(key, str) and key.startswith("NOTIFICATIONS_") and key not in CHECKS:
            close = difflib.get_close_matches(key, CHECKS, n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else "see docs/config.rst for the keys that exist."
            warnings.warn(
                f"Flask-Notifications has no setting {key}, so it is ignored; {hint}",
                ConfigurationWarning,
                stacklevel=3,
            )


def _checked(key: str, value: Any, check: Check) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        shown = value
        if isinstance(value, str) and "@" in value and "://" in value:
            parts = urlsplit(value)
            shown = value.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2])
        raise ConfigurationError(f"{key} is {shown!r}, which does not work: expected {exc}.") from None
