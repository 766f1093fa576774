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
from types import FrameType
from typing import Any

from ..streaming.green import spawn

__all__ = ["child_exit", "post_worker_init"]

logger = logging.getLogger(__name__)

# gunicorn.conf.py imports this module in the master, before gevent patches
# the workers: what imports redis or ssl (the streams, the metrics) is
# imported in the hooks, or gevent warns on every worker boot.


def _end_streams() -> None:
    from ..streaming.fanout import end_all_streams

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
