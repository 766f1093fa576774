"""Gunicorn: the worker class that serves live streams, and server hooks
for a graceful stop that ends the streams at once and for the multiprocess
metrics of workers that exit.

The worker class is gunicorn's gevent worker, which also offers each request
the connection (:class:`GeventWorker`)::

    gunicorn -k flask_notifications.gunicorn.GeventWorker -w 4 'myapp:create_app()'

Import the hooks in the gunicorn configuration file::

    # gunicorn.conf.py
    from flask_notifications.ops.gunicorn import child_exit, post_worker_init  # noqa: F401

On a graceful stop (``SIGTERM`` to gunicorn, or a reload with ``SIGHUP``,
which stops the old workers with ``SIGTERM``), a worker waits up to
``graceful_timeout`` seconds for its requests to finish, and an event
stream never finishes on its own: without the hook, every worker with a
stream open takes the whole timeout (30 s by default), then cuts its
streams. With it, the worker's streams end at once with a ``reconnect``
event (see :meth:`Stream.end <flask_notifications.streaming.stream.Stream.end>`),
the browsers resume on the other workers from their ``Last-Event-ID``, and
the worker exits about a second later, having lost nothing.

If a configuration defines these hooks already, call these from them.
:class:`GeventWorker` ends its streams on ``SIGTERM`` by itself.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from ..streaming.fanout import end_all_streams
from ..streaming.green import ENVIRON_KEY, SocketWriter, spawn

__all__ = ["GeventWorker", "child_exit", "post_worker_init"]

#: The gunicorn versions this worker class is tested with (pyproject's
#: ``server`` extra pins the same range).
TESTED_GUNICORN = ">=23,<28"

logger = logging.getLogger(__name__)


def _end_streams() -> None:
    ended = end_all_streams()
    logger.info("Stopping: ended %d event streams; their clients resume on another worker.", ended)


def post_worker_init(worker: Any) -> None:
    """Make the worker end its streams when it receives ``SIGTERM``, then
    stop as gunicorn would (its own handler runs after)."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # A signal handler must not block (under gevent it may run in the
        # event loop): the streams are ended from a greenlet or thread.
        spawn(_end_streams, name="flask-notifications-stop")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)


def child_exit(server: Any, worker: Any) -> None:
    """In the gunicorn master, after a worker exited: drop its live gauges
    from the multiprocess metrics (``PROMETHEUS_MULTIPROC_DIR``)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from .metrics import mark_process_dead

        mark_process_dead(worker.pid)


_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _OfferConnection:
    """The application, with a :class:`~flask_notifications.streaming.green.SocketWriter`
    for the request's connection in each HTTP/1.x request's environ."""

    def __init__(self, app: _WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        writer = SocketWriter.for_connection(environ.get("gunicorn.socket"), environ.get("SERVER_PROTOCOL"))
        if writer is not None:
            environ[ENVIRON_KEY] = writer
        return self.app(environ, start_response)


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker (``-k gevent``), which also lets the event
    streams write to their connections directly::

        gunicorn -k flask_notifications.gunicorn.GeventWorker 'myapp:create_app()'

    Each HTTP/1.x request's WSGI environ gets a
    :class:`~flask_notifications.streaming.green.SocketWriter` for its
    connection, under ``"flask_notifications.socket_writer"``. A stream
    served with one goes live once its first frames and its replay went out
    through gunicorn (see :class:`~flask_notifications.streaming.live.LiveStream`):
    the process's listener then writes each batch of events to its socket
    with one non-blocking write, while the request's greenlet waits. The
    request stays gunicorn's: it counts toward ``--worker-connections``,
    gunicorn writes the response's end and closes the connection, and no
    exception ends it. On ``SIGTERM`` the worker ends its streams at once
    with a ``reconnect`` event, as the :func:`post_worker_init` hook does.

    The worker relies on gunicorn's documented gevent worker
    (:class:`gunicorn.workers.ggevent.GeventWorker`), on ``gunicorn.socket``
    in the environ, and on gunicorn writing each item the response yields
    before it asks for the next, framed as chunks for HTTP/1.1 when the
    response has no ``Content-Length``: tested with the gunicorn versions of
    :data:`TESTED_GUNICORN`. It serves HTTP only: another ``--protocol``
    (``uwsgi``) is refused at boot.
    """

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Refuse, at boot, a configuration the worker cannot serve.

        :raises RuntimeError: ``--protocol`` is not ``http``.
        """
        # gunicorn 23 has no --protocol setting: it speaks HTTP only.
        protocol = cfg.settings["protocol"].get() if "protocol" in cfg.settings else "http"
        if protocol != "http":
            raise RuntimeError(
                f"flask_notifications.gunicorn.GeventWorker serves HTTP only, not --protocol {protocol}: its "
                "streams write HTTP/1.1 chunks to the connection. Serve uWSGI with -k gevent (the streams then "
                "go through gunicorn), or drop --protocol."
            )

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: _WSGIApp = getattr(self, "wsgi")  # noqa: B009 - set by gunicorn, untyped
        self.wsgi = _OfferConnection(app)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A signal handler must not block: the streams end in a greenlet.
        spawn(_end_streams, name="flask-notifications-stop")
