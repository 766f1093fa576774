"""The gunicorn worker class that serves live streams:
``gunicorn -k flask_notifications.gunicorn.GeventWorker``.

It is gunicorn's gevent worker, which also offers each HTTP/1.x request its
connection as a :class:`~flask_notifications.streaming.green.SocketWriter`
in the WSGI environ, so that a live stream's frames are written straight to
the socket, one write per stream per batch, while the request stays
gunicorn's (it counts toward ``--worker-connections``, and gunicorn ends the
response). Kept apart from the hooks of :mod:`flask_notifications.ops.gunicorn`:
gunicorn's gevent worker imports ``ssl``, which a ``gunicorn.conf.py`` must
not import in the master.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from ..streaming.green import ENVIRON_KEY, SocketWriter, spawn
from .gunicorn import _end_streams

__all__ = ["TESTED_GUNICORN", "GeventWorker"]

#: The gunicorn versions this worker class is tested with (pyproject's
#: ``server`` extra pins the same range).
TESTED_GUNICORN = ">=23,<28"

logger = logging.getLogger(__name__)

_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _no_early_hints(headers: Iterable[tuple[str, str]]) -> None:
    """``wsgi.early_hints`` of a request a live stream answers, once the
    application has returned."""


class _OfferConnection:
    """The application, with a :class:`~flask_notifications.streaming.green.SocketWriter`
    for the request's connection in each HTTP/1.x request's environ."""

    def __init__(self, app: _WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        writer = SocketWriter.for_connection(environ.get("gunicorn.socket"), environ.get("SERVER_PROTOCOL"))
        if writer is not None:
            environ[ENVIRON_KEY] = writer
        body = self.app(environ, start_response)
        if writer is not None and writer.claimed and "wsgi.early_hints" in environ:
            # A live stream parks its request for the connection's life, and
            # nothing sends early hints from here on: the application has
            # returned, the stream's frames never do, and gunicorn ignores
            # them once the head is out. A callback that does nothing
            # replaces gunicorn's, whose closure each parked stream would
            # otherwise hold.
            environ["wsgi.early_hints"] = _no_early_hints
        return body


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
