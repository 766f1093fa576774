"""Every configuration key of Flask-Notifications and its default;
docs/config.rst documents each key, and :mod:`.checks` checks each value."""

from __future__ import annotations

from typing import Any

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
}
