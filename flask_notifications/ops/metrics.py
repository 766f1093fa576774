"""Prometheus metrics, with ``prometheus_client`` (the ``metrics`` extra).

Set ``NOTIFICATIONS_METRICS = True`` and the application counts what its
streams, its :meth:`~flask_notifications.Notifications.send` calls and its
Celery consumers do, in every process that imports it: the web processes
serve them at ``NOTIFICATIONS_METRICS_URL`` (``/metrics``), and a Celery
worker on ``NOTIFICATIONS_METRICS_WORKER_PORT``. :func:`make_wsgi_app` gives
the same endpoint as a WSGI application to mount elsewhere.

Every metric is on ``prometheus_client``'s default registry, beside the
application's own. With several processes per host (gunicorn workers, a
prefork Celery pool), set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
writable by all of them before they start: each process then writes its
values there, and any of them serves the sum (``prometheus_client``'s
multiprocess mode). Gunicorn must call :func:`mark_process_dead` when a
worker exits (see :mod:`flask_notifications.ops.gunicorn`).

Where the numbers come from:

- the :mod:`~flask_notifications.signals` of this package (sends, failed
  sends, dead letters, publish latency, refused streams, backend outages);
- Celery's own task signals for the consumer tasks (their outcome, and the
  latency from ``send()`` to the consumer's start, carried in a message
  header);
- the counters each process's :class:`~flask_notifications.streaming.fanout.Fanout`
  keeps (:meth:`~flask_notifications.streaming.fanout.Fanout.stats`), copied when the
  process is scraped and, in multiprocess mode, every
  ``NOTIFICATIONS_METRICS_SYNC_INTERVAL`` seconds;
- at scrape time, the ledger (dead letters waiting) and the broker (Celery
  queue depth).

docs/operations.rst lists every metric and what to alert on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from celery import current_task
from celery import signals as celery_signals
from flask import Flask, Response, request_started

from .. import signals
from ..errors import ConfigurationError, NotificationsError
from ..streaming.green import spawn
from ..worker.messages import DISPATCH_MANY_TASK, DISPATCH_TASK
from ..worker.outcome import Outcome
from . import instrumented
from .instrumented import enabled, hub_label, labels_of
from .metric_families import (
    BACKEND_DOWN,
    BACKEND_OUTAGES,
    BACKEND_RECONNECTS,
    CONSUMER_RUNS,
    DEAD_LETTERED,
    EVENTS_SENT,
    EXPORTED_NAMES,
    FANOUT_COUNTERS,
    HUB_EVENTS,
    LISTENERS,
    OTHER,
    OUTCOMES,
    PUBLISH_SECONDS,
    REFUSALS,
    SEND_FAILURES,
    SEND_TO_CONSUMER_SECONDS,
    SENT_AT_HEADER,
    STREAMS_OPEN,
    STREAMS_REFUSED,
    multiprocess_mode,
)
from .metrics_dir import refuse_prefork_per_process
from .scrape import ScrapeCollector

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
        start_http_server,
    )
    from prometheus_client import make_wsgi_app as _prometheus_wsgi_app
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ConfigurationError(
        "NOTIFICATIONS_METRICS needs prometheus_client: pip install '.[metrics]' from a clone of Flask-Notifications."
    ) from exc

if TYPE_CHECKING:
    from ..state import Runtime
    from ..streaming.fanout import Fanout

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORTED_NAMES",
    "OUTCOMES",
    "SENT_AT_HEADER",
    "ScrapeCollector",
    "hub_label",
    "instrument",
    "make_wsgi_app",
    "mark_process_dead",
    "multiprocess_mode",
    "registry",
    "render",
    "sync",
]

# -- the instrumented applications ------------------------------------------------------

_install_lock = threading.Lock()
_installed = False


def instrument(runtime: Runtime) -> None:
    """Count what ``runtime``'s application does; :meth:`Notifications.init_app`
    calls it when ``NOTIFICATIONS_METRICS`` is true. Adds the metrics
    endpoint at ``NOTIFICATIONS_METRICS_URL`` unless that is ``None``."""
    global _installed
    app = runtime.app
    instrumented.add(runtime)
    path = app.config["NOTIFICATIONS_METRICS_URL"]
    if path:
        app.add_url_rule(path, "notifications_metrics", _metrics_view)
    with _install_lock:
        if _installed:
            return
        _installed = True
        for signal, receiver in _RECEIVERS:
            signal.connect(receiver, weak=False)
        request_started.connect(_on_request, weak=False)
        celery_signals.before_task_publish.connect(_stamp, weak=False, dispatch_uid="flask_notifications.stamp")
        celery_signals.task_prerun.connect(_started, weak=False, dispatch_uid="flask_notifications.started")
        celery_signals.task_postrun.connect(_finished, weak=False, dispatch_uid="flask_notifications.finished")
        celery_signals.worker_ready.connect(_serve_worker, weak=False, dispatch_uid="flask_notifications.serve")
        celery_signals.worker_init.connect(_check_pool, weak=False, dispatch_uid="flask_notifications.pool")
        if not multiprocess_mode():
            REGISTRY.register(ScrapeCollector())


# -- receivers of this package's signals ------------------------------------------------


def _on_sent(app: Any, hub_ids: tuple[str, ...] = (), **kwargs: Any) -> None:
    if enabled(app):
        EVENTS_SENT.inc()
        for hub_id in hub_ids:
            HUB_EVENTS.labels(hub_label(app, hub_id)).inc()


def _on_send_failed(app: Any, exception: BaseException | None = None, **kwargs: Any) -> None:
    if enabled(app):
        name = type(exception).__name__ if isinstance(exception, NotificationsError) else OTHER
        SEND_FAILURES.labels(name).inc()


def _on_published(app: Any, seconds: float = 0.0, **kwargs: Any) -> None:
    if enabled(app):
        PUBLISH_SECONDS.observe(seconds)


def _on_dead_lettered(app: Any, **kwargs: Any) -> None:
    if enabled(app):
        DEAD_LETTERED.inc()


def _on_refused(app: Any, status: int | None = None, **kwargs: Any) -> None:
    if enabled(app):
        code = str(status)
        STREAMS_REFUSED.labels(code if code in REFUSALS else OTHER).inc()


def _on_backend_down(app: Any, **kwargs: Any) -> None:
    if enabled(app):
        BACKEND_OUTAGES.inc()
        BACKEND_DOWN.set(1)


def _on_backend_up(app: Any, **kwargs: Any) -> None:
    if enabled(app):
        BACKEND_RECONNECTS.inc()
        BACKEND_DOWN.set(0)


_RECEIVERS: tuple[tuple[Any, Callable[..., None]], ...] = (
    (signals.event_sent, _on_sent),
    (signals.send_failed, _on_send_failed),
    (signals.event_published, _on_published),
    (signals.event_dead_lettered, _on_dead_lettered),
    (signals.stream_refused, _on_refused),
    (signals.stream_backend_down, _on_backend_down),
    (signals.stream_backend_up, _on_backend_up),
)


# -- receivers of Celery's signals --------------------------------------------------------


def _flask_app_of(task: Any) -> Flask | None:
    """The instrumented application whose Celery app runs ``task``."""
    celery = getattr(task, "app", None)
    for runtime in instrumented.runtimes():
        if runtime.celery is celery:
            return runtime.app
    return None


def _stamp(sender: Any = None, headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Put the time of ``send()`` on the dispatch message, and carry it on
    to the consumer messages the dispatch task (or a retry) enqueues."""
    if headers is None or SENT_AT_HEADER in headers:
        return
    if sender in (DISPATCH_TASK, DISPATCH_MANY_TASK):
        headers[SENT_AT_HEADER] = time.time()
        return
    # The proxy is false outside a task (a send from a web process or a shell).
    if current_task:
        sent_at = _sent_at(current_task.request)
        if sent_at is not None:
            headers[SENT_AT_HEADER] = sent_at


def _sent_at(request: Any) -> float | None:
    value = getattr(request, SENT_AT_HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(SENT_AT_HEADER)
    return float(value) if isinstance(value, int | float) else None


def _consumer_run(task: Any, args: Any) -> tuple[Flask, str, str] | None:
    """The application, hub and consumer of a consumer task's run, or
    ``None`` when ``task`` is not a consumer of an instrumented application."""
    app = _flask_app_of(task)
    if app is None or not isinstance(args, list | tuple) or not args or not isinstance(args[0], str):
        return None
    labels = labels_of(app)
    name = str(task.name)
    if name not in labels.all_consumers:
        return None
    return app, args[0], name if name in labels.consumers else OTHER


def _started(sender: Any = None, task: Any = None, args: Any = None, **kwargs: Any) -> None:
    run = _consumer_run(task, args)
    if run is None or task.request.retries:
        return
    sent_at = _sent_at(task.request)
    if sent_at is not None:
        SEND_TO_CONSUMER_SECONDS.labels(run[2]).observe(max(0.0, time.time() - sent_at))


def _finished(
    sender: Any = None, task: Any = None, args: Any = None, retval: Any = None, state: str = "", **kwargs: Any
) -> None:
    run = _consumer_run(task, args)
    if run is None:
        return
    app, hub_id, consumer = run
    outcome: str
    if state == "RETRY":
        outcome = Outcome.RETRIED
    elif state == "SUCCESS":
        outcome = retval if isinstance(retval, str) and retval in OUTCOMES else OTHER
    elif state == "REJECTED":
        outcome = Outcome.REJECTED
    else:
        outcome = Outcome.FAILED
    CONSUMER_RUNS.labels(hub_label(app, hub_id), consumer, outcome).inc()


def _serve_worker(sender: Any = None, **kwargs: Any) -> None:
    """Serve the metrics of a Celery worker of an instrumented application
    on ``NOTIFICATIONS_METRICS_WORKER_PORT``."""
    celery = getattr(sender, "app", None)
    for runtime in instrumented.runtimes():
        port = runtime.app.config["NOTIFICATIONS_METRICS_WORKER_PORT"]
        if runtime.celery is celery and port:
            start_http_server(int(port), registry=_worker_registry())
            logger.info("Serving the worker's metrics on port %s.", port)
            return


def _check_pool(sender: Any = None, **kwargs: Any) -> None:
    celery = getattr(sender, "app", None)
    if any(runtime.celery is celery for runtime in instrumented.runtimes()):
        refuse_prefork_per_process(sender)


def _worker_registry() -> CollectorRegistry:
    if not multiprocess_mode():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(ScrapeCollector())
    return registry


# -- the fan-out's counters -------------------------------------------------------------

#: What was last copied of each fan-out's counters.
_copied: weakref.WeakKeyDictionary[Fanout, dict[str, int]] = weakref.WeakKeyDictionary()
#: Hub label values whose gauge this process set, so a hub whose last
#: stream closed goes back to zero.
_open_labels: set[str] = set()
_sync_lock = threading.Lock()


def sync() -> None:
    """Copy the counters of this process's stream fan-outs to the metrics:
    the increase of each counter since the last copy, and the streams and
    listeners open now."""
    with _sync_lock:
        open_by_hub: dict[str, int] = {}
        listeners = down = 0
        for runtime in instrumented.runtimes():
            fanout = runtime.fanout
            stats = fanout.stats()
            before = _copied.get(fanout, {})
            for key, metric in FANOUT_COUNTERS.items():
                increase = stats[key] - before.get(key, 0)
                if increase > 0:
                    metric.inc(increase)
            _copied[fanout] = stats
            listeners += stats["listening"]
            down = max(down, stats["backend_down"])
            app = runtime.app
            for hub_id, count in fanout.hub_streams().items():
                label = hub_label(app, hub_id)
                open_by_hub[label] = open_by_hub.get(label, 0) + count
        for label in _open_labels - set(open_by_hub):
            STREAMS_OPEN.labels(label).set(0)
        for label, count in open_by_hub.items():
            STREAMS_OPEN.labels(label).set(count)
        _open_labels.update(open_by_hub)
        LISTENERS.set(listeners)
        BACKEND_DOWN.set(down)


_syncing_pid: int | None = None


def _on_request(app: Any, **kwargs: Any) -> None:
    """In multiprocess mode, start copying this process's stream counters
    periodically, from its first request on."""
    global _syncing_pid
    if _syncing_pid == os.getpid() or not multiprocess_mode() or not enabled(app):
        return
    with _install_lock:
        if _syncing_pid == os.getpid():
            return
        _syncing_pid = os.getpid()
    interval = float(app.config["NOTIFICATIONS_METRICS_SYNC_INTERVAL"])
    spawn(_sync_forever, interval, name="flask-notifications-metrics")


def _sync_forever(interval: float) -> None:
    pid = os.getpid()
    while _syncing_pid == pid:
        time.sleep(interval)
        try:
            sync()
        except Exception:
            logger.exception("Copying the stream counters to the metrics failed.")


def registry() -> CollectorRegistry:
    """The registry a scrape of this process serves: the default one, or
    in multiprocess mode one that sums the values of every process."""
    return _worker_registry()


def render() -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, and its content type,
    after copying this process's stream counters."""
    sync()
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def _metrics_view() -> Response:
    data, content_type = render()
    return Response(data, content_type=content_type, headers={"Cache-Control": "no-store"})


def make_wsgi_app() -> Callable[..., Iterable[bytes]]:
    """The metrics endpoint as a WSGI application, to mount where the
    application's own routes (and their authentication) do not apply::

        from werkzeug.middleware.dispatcher import DispatcherMiddleware
        from flask_notifications.ops.metrics import make_wsgi_app

        app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})
    """

    def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sync()
        served: Iterable[bytes] = _prometheus_wsgi_app(registry())(environ, start_response)
        return served

    return metrics_app


def mark_process_dead(pid: int) -> None:
    """Forget the live gauges of process ``pid`` (a gunicorn worker that
    exited), in multiprocess mode; a no-op otherwise."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
