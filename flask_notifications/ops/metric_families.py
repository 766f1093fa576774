"""The Prometheus metric families of this package, on ``prometheus_client``'s
default registry: what :mod:`flask_notifications.ops.metrics` counts into.
Importing this module imports ``prometheus_client`` (the ``metrics`` extra),
which reads ``PROMETHEUS_MULTIPROC_DIR`` then: :mod:`.metrics_dir` sets it
up first, in a gunicorn or ``celery worker`` process, when this is the first
import of ``prometheus_client`` (the documented
``from flask_notifications.metrics import make_wsgi_app`` at the top of an
application's module runs before ``init_app``)."""

from __future__ import annotations

import os

from ..errors import ConfigurationError
from ..worker.outcome import Outcome
from .metrics_dir import prepare_at_import

prepare_at_import()

try:
    from prometheus_client import (
        Counter,
        Gauge,
        Histogram,
    )
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ConfigurationError(
        "NOTIFICATIONS_METRICS needs prometheus_client: pip install '.[metrics]' from a clone of Flask-Notifications."
    ) from exc


#: The header that carries the time of ``send()`` to the consumer tasks.
SENT_AT_HEADER = "notifications_sent_at"
#: The label value of the hubs (and consumers) past ``NOTIFICATIONS_METRICS_MAX_HUBS``.
OTHER = "other"
#: What a consumer task's run may end in (``outcome`` label).
OUTCOMES = frozenset(Outcome)
#: Statuses a refused stream is counted under; any other is ``other``.
REFUSALS = frozenset({"400", "401", "403", "404", "429", "503"})
#: Latency buckets, in seconds, from a fast Redis publish to a backed-up queue.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# -- the metrics ----------------------------------------------------------------------

STREAMS_OPEN = Gauge(
    "notifications_streams_open",
    "Streams receiving live events now, by hub.",
    ["hub"],
    multiprocess_mode="livesum",
)
STREAMS_OPENED = Counter("notifications_streams_opened", "Streams opened.")
STREAMS_REFUSED = Counter(
    "notifications_streams_refused", "Stream requests answered with an error instead, by status.", ["status"]
)
STREAM_EVENTS = Counter("notifications_stream_events", "Events the stream listeners fanned out.")
STREAM_DELIVERIES = Counter(
    "notifications_stream_deliveries", "Event frames handed to streams (one per event and stream)."
)
STREAM_REPLAYED = Counter(
    "notifications_stream_replayed_events", "Events replayed from the history to resuming streams."
)
STREAM_EVICTIONS = Counter("notifications_stream_evictions", "Streams ended because they fell a queue behind.")
STREAM_GAPS = Counter("notifications_stream_gaps", "Gap events sent to streams (events they will not receive).")
BACKEND_READ_FAILURES = Counter(
    "notifications_stream_backend_read_failures", "Failed reads of the backend by the stream listeners."
)
BACKEND_OUTAGES = Counter("notifications_stream_backend_outages", "Times a stream listener lost the backend.")
BACKEND_RECONNECTS = Counter(
    "notifications_stream_backend_reconnects", "Times a stream listener read the backend again after an outage."
)
BACKEND_DOWN = Gauge(
    "notifications_stream_backend_down",
    "1 while a stream listener cannot read the backend.",
    multiprocess_mode="livemax",
)
LISTENERS = Gauge(
    "notifications_stream_listeners",
    "Stream listeners holding a backend subscription (one per process with open streams).",
    multiprocess_mode="livesum",
)
EVENTS_SENT = Counter("notifications_events_sent", "send() calls that succeeded.")
HUB_EVENTS = Counter("notifications_hub_events", "Events sent, by hub whose filter matched.", ["hub"])
SEND_FAILURES = Counter("notifications_send_failures", "send() calls that raised, by error.", ["error"])
PUBLISH_SECONDS = Histogram(
    "notifications_backend_publish_seconds",
    "Time the backend took to publish an event to a hub's streams (PushConsumer).",
    buckets=BUCKETS,
)
SEND_TO_CONSUMER_SECONDS = Histogram(
    "notifications_send_to_consumer_seconds",
    "Time from send() to the first start of a consumer's task, by consumer.",
    ["consumer"],
    buckets=BUCKETS,
)
CONSUMER_RUNS = Counter(
    "notifications_consumer_runs",
    "Runs of consumer tasks, by hub, consumer and outcome.",
    ["hub", "consumer", "outcome"],
)
DEAD_LETTERED = Counter("notifications_dead_lettered", "Deliveries kept as dead letters.")

#: The names of the metrics, as exported (counters with ``_total``).
EXPORTED_NAMES = (
    "notifications_streams_open",
    "notifications_streams_opened_total",
    "notifications_streams_refused_total",
    "notifications_stream_events_total",
    "notifications_stream_deliveries_total",
    "notifications_stream_replayed_events_total",
    "notifications_stream_evictions_total",
    "notifications_stream_gaps_total",
    "notifications_stream_backend_read_failures_total",
    "notifications_stream_backend_outages_total",
    "notifications_stream_backend_reconnects_total",
    "notifications_stream_backend_down",
    "notifications_stream_listeners",
    "notifications_events_sent_total",
    "notifications_hub_events_total",
    "notifications_send_failures_total",
    "notifications_backend_publish_seconds",
    "notifications_send_to_consumer_seconds",
    "notifications_consumer_runs_total",
    "notifications_dead_lettered_total",
    "notifications_dead_letters",
    "notifications_celery_queue_messages",
)

#: Fan-out counters and the metric each one is copied to.
FANOUT_COUNTERS = {
    "opened": STREAMS_OPENED,
    "events": STREAM_EVENTS,
    "queued": STREAM_DELIVERIES,
    "replayed": STREAM_REPLAYED,
    "evicted": STREAM_EVICTIONS,
    "gaps": STREAM_GAPS,
    "backend_failures": BACKEND_READ_FAILURES,
}


def multiprocess_mode() -> bool:
    """Whether ``PROMETHEUS_MULTIPROC_DIR`` is set, so every process writes
    its values there and a scrape serves their sum."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
