"""The gunicorn worker class that serves live streams:
``gunicorn -k flask_notifications.gunicorn.GeventWorker``.

It is gunicorn's gevent worker, which also offers each HTTP/1.x request its
connection as a :class:`~flask_notifications.streaming.green.SocketWriter`
in the WSGI environ. A live stream writes its first frames through
gunicorn, then takes the connection over: gunicorn ends the request, and
the connection's greenlet serves the stream in a shallow frame, so that a
parked stream no longer holds gunicorn's request, parser, environ and
response, nor their frames. The greenlet stays in gunicorn's pool, so the
stream counts toward ``--worker-connections`` and a graceful stop waits for
it. Kept apart from the hooks of :mod:`flask_notifications.ops.gunicorn`:
gunicorn's gevent worker imports ``ssl``, which a ``gunicorn.conf.py`` must
not import in the master.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from ..streaming.green import ENVIRON_KEY, SocketWriter, spawn
from .gunicorn import _end_streams

__all__ = ["TESTED_GUNICORN", "GeventWorker"]

#: The gunicorn versions this worker class is tested with (pyproject's
#: ``server`` extra pins the same range).
TESTED_GUNICORN = ">=23,<28"

logger = logging.getLogger(__name__)

_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Connection:
    """The client's socket as gunicorn sees it under this worker: the
    socket itself, until a live stream takes the connection over (its
    :class:`~flask_notifications.streaming.green.SocketWriter`'s
    ``stream`` is set). From then on what gunicorn writes (the end of the
    response it still closes) goes nowhere, and a read finds the connection
    at its end, so gunicorn's keep-alive loop ends; closing it is left to
    the worker, once the stream is served."""

    __slots__ = ("sock", "writer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: The writer offered to the connection's current request, if any.
        self.writer: SocketWriter | None = None

    @property
    def stream(self) -> Any:
        """The live stream that took the connection over, if one did."""
        return None if self.writer is None else self.writer.stream

    @property
    def taken_over(self) -> bool:
        return self.stream is not None

    def offer(self, protocol: object) -> SocketWriter | None:
        """A writer for the request now served, if the stream may write
        to the connection directly (see :meth:`SocketWriter.for_connection
        <flask_notifications.streaming.green.SocketWriter.for_connection>`)."""
        if self.taken_over:
            return None
        self.writer = SocketWriter.for_connection(self.sock, protocol)
        return self.writer

    def sendall(self, data: bytes, *args: Any) -> None:
        if not self.taken_over:
            self.sock.sendall(data, *args)

    def send(self, data: bytes, *args: Any) -> int:
        return len(data) if self.taken_over else self.sock.send(data, *args)

    def recv(self, size: int, *args: Any) -> bytes:
        return b"" if self.taken_over else self.sock.recv(size, *args)

    def recv_into(self, buffer: Any, *args: Any) -> int:
        return 0 if self.taken_over else self.sock.recv_into(buffer, *args)

    def close(self) -> None:
        if not self.taken_over:
            self.sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _OfferConnection:
    """The application, with a :class:`~flask_notifications.streaming.green.SocketWriter`
    for the request's connection in each HTTP/1.x request's environ."""

    def __init__(self, app: _WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        connection = environ.get("gunicorn.socket")
        if isinstance(connection, _Connection):
            # The application sees the socket itself, as under -k gevent.
            environ["gunicorn.socket"] = connection.sock
            writer = connection.offer(environ.get("SERVER_PROTOCOL"))
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
    it takes the connection over, gunicorn ends the request (its access log
    line and ``post_request`` hook come then, with the bytes sent so far),
    and the connection's greenlet, back in this worker's :meth:`handle`,
    serves the stream until it ends: the process's listener writes each
    batch of events to its socket with one non-blocking write, the
    greenlet writes what the listener cannot, and at the end the stream's
    last frame and the response's end. Then the worker closes the
    connection. No error goes through gunicorn's loop (the worker ends
    its keep-alive loop as gunicorn ends a connection that must close, so
    that nothing the client pipelined behind the stream is served), and the
    greenlet stays in gunicorn's pool: a live stream counts toward
    ``--worker-connections``, and a graceful stop waits for it. On
    ``SIGTERM``, and when ``--max-requests`` makes it restart, the worker
    ends its streams at once with a ``reconnect`` event, as the
    :func:`post_worker_init` hook does on ``SIGTERM``.

    The worker relies on gunicorn's documented gevent worker
    (:class:`gunicorn.workers.ggevent.GeventWorker`), on its ``handle``
    being called with each accepted connection and using the socket only
    through its methods, and on gunicorn writing each item the response
    yields before it asks for the next, framed as chunks for HTTP/1.1 when
    the response has no ``Content-Length``: tested with the gunicorn
    versions of :data:`TESTED_GUNICORN`. It serves HTTP only: another
    ``--protocol`` (``uwsgi``) is refused at boot. A TLS connection (gunicorn
    terminating TLS) is served as by ``-k gevent``.
    """

    #: The worker ended its streams (it stops): see :meth:`handle_exit`.
    _streams_ended = False

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

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if isinstance(client, ssl.SSLSocket):
            super().handle(listener, client, addr)
            return
        connection = _Connection(client)
        try:
            # gunicorn serves the connection's requests in a greenlet of its
            # own, which ends once gunicorn is done: the pages of CPython's
            # data stack and the C stack that its deep frames touched go
            # with it, and the pool's greenlet, which stays for the stream,
            # holds only its own shallow frames (2.6 KB less per idle
            # stream with an authorizer, measured with bench.per_user).
            self._serve_requests(listener, connection, addr)
            if connection.taken_over:
                connection.stream.serve()
        finally:
            if connection.taken_over:
                connection.stream.close()  # killed before or while serving
            client.close()

    def _serve_requests(self, listener: Any, connection: _Connection, addr: Any) -> None:
        """gunicorn's handling of the connection, in a greenlet that ends
        with it (and that nothing refers to afterwards)."""
        served = gevent.spawn(super().handle, listener, connection, addr)
        try:
            served.get()
        except BaseException:
            served.kill()
            raise

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        alive = self.alive
        try:
            super().handle_request(listener_name, req, sock, addr)
        finally:
            # (gunicorn ends a connection that must close by raising StopIteration.)
            if alive and not self.alive and not self._streams_ended:
                # This request was the worker's last (--max-requests): it
                # stops and restarts, and its streams end now, as on
                # SIGTERM, rather than be cut at the graceful timeout.
                self._streams_ended = True
                spawn(_end_streams, name="flask-notifications-stop")
        if isinstance(sock, _Connection) and sock.taken_over:
            # The connection is the stream's: end gunicorn's keep-alive
            # loop the way gunicorn ends it after a response that closes
            # its connection, so that a request the client pipelined behind
            # the stream (already in gunicorn's buffer) is not served.
            raise StopIteration()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A signal handler must not block: the streams end in a greenlet.
        self._streams_ended = True
        spawn(_end_streams, name="flask-notifications-stop")
