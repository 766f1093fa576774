"""What the stream layer needs of gevent: whether the process is
monkey-patched, a wake-up that does not yield, a way to run the listener,
and a watcher that notices at once when a client hangs up.

Nothing here imports gevent unless the process runs under it, so a threaded
server never pays for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


def under_gevent() -> bool:
    """Whether gevent has monkey-patched this process's sockets, so that
    blocking calls (Redis reads, queue waits) yield to other greenlets."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is optional
        return False
    return bool(monkey.is_module_patched("socket"))


def cooperate() -> None:
    """Under gevent, let the other greenlets run (the streams drain their
    queues between events of one large batch, so a burst does not look like
    slow clients). A no-op in a threaded process."""
    if under_gevent():
        time.sleep(0)


def call_blocking(func: Callable[..., T], *args: Any) -> T:
    """Call ``func(*args)``, which blocks in a system call that gevent cannot
    make cooperative (``flock``, ``fsync``, a write to a slow disk). Under
    gevent it runs in the hub's threadpool, so only the calling greenlet
    waits and the others (and the worker's connection to its broker) keep
    running; otherwise it is called directly."""
    if under_gevent():
        import gevent

        result: T = gevent.get_hub().threadpool.apply(func, args)
        return result
    return func(*args)


class Wakeup(Protocol):
    """What a stream's queue needs of a ``threading.Condition``."""

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any, /) -> Any: ...

    def notify(self) -> None: ...

    def notify_all(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class GreenletCondition:
    """A :class:`Wakeup` for a process monkey-patched by gevent.

    A patched ``Condition`` yields to the hub on every ``notify()``: its
    ownership check try-acquires the lock, and gevent's lock sleeps when a
    non-blocking acquire fails. The listener then let every stream write
    after each single event, one system call per event and stream. Greenlets
    switch only where they block, so the queue needs no lock here, and a
    ``gevent.event.Event`` wakes the stream without yielding."""

    def __init__(self) -> None:
        from gevent.event import Event as GeventEvent

        self._event = GeventEvent()

    def __enter__(self) -> bool:
        return True

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any, /) -> None:
        return None

    def notify(self) -> None:
        self._event.set()

    notify_all = notify

    def wait(self, timeout: float | None = None) -> bool:
        woken = bool(self._event.wait(timeout))
        self._event.clear()
        return woken


class Parking:
    """The wake-up of a stream under gevent (a :class:`Wakeup` for the one
    greenlet that waits on it, the stream's request's): as with
    :class:`GreenletCondition`, :meth:`notify` never yields, and a
    :meth:`wait` returns at once after a notify it has not consumed.

    The greenlet parks by switching to the hub itself, and a notify or a
    timed wait's loop timer (a queued stream's next heartbeat) switches
    back to it from the hub, rather than through a ``gevent.hub.Waiter`` or a
    ``gevent.event.Event`` with a ``gevent.Timeout`` raised into it: a parked
    stream holds none of them, its greenlet's saved C stack is shorter (no
    ``Waiter.get`` between the stream's frame and the hub), and a
    heartbeat's wake-up raises and catches no exception.
    """

    __slots__ = ("_parked", "_set", "_waking")

    def __init__(self) -> None:
        #: The greenlet waiting in :meth:`wait`, while it waits.
        self._parked: Any = None
        self._set = False
        #: A wake-up is scheduled in the hub and has not run yet.
        self._waking = False

    def __enter__(self) -> bool:
        return True

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any, /) -> None:
        return None

    def notify(self) -> None:
        self._set = True
        if self._parked is not None and not self._waking:
            from gevent.hub import get_hub

            self._waking = True
            get_hub().loop.run_callback(self._wake)

    notify_all = notify

    def _wake(self) -> None:
        # Runs in the hub. A greenlet that left its wait in the meantime
        # (woken by its timer, or killed) is not switched to: it may be
        # blocked elsewhere by now.
        self._waking = False
        parked, self._parked = self._parked, None
        if parked is not None:
            parked.switch()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until notified, or for ``timeout`` seconds.

        :return: whether it was notified.
        """
        if not self._set:
            from gevent import getcurrent
            from gevent.hub import get_hub

            hub = get_hub()
            self._parked = getcurrent()
            timer = None
            if timeout is not None:
                timer = hub.loop.timer(max(0.0, timeout))
                timer.start(self._wake)
            try:
                hub.switch()
            finally:
                if timer is not None:
                    timer.close()
                self._parked = None
        woken, self._set = self._set, False
        return woken


def make_wakeup() -> Wakeup:
    """A :class:`GreenletCondition` under gevent, else a ``threading.Condition``."""
    if under_gevent():
        return GreenletCondition()
    return threading.Condition(threading.Lock())


class Runner(Protocol):
    """A started listener: a greenlet or a thread."""

    def join(self, timeout: float | None = None) -> Any: ...


def spawn(func: Callable[..., None], *args: Any, name: str) -> Runner:
    """Run ``func(*args)`` in a greenlet under gevent, else in a daemon thread."""
    if under_gevent():
        import gevent

        greenlet: Runner = gevent.spawn(func, *args)
        return greenlet
    thread = threading.Thread(target=func, args=args, name=name, daemon=True)
    thread.start()
    return thread


def is_current(runner: Runner | None) -> bool:
    """Whether ``runner`` is the greenlet or thread running this code."""
    if runner is None:
        return False
    if runner is threading.current_thread():
        return True
    if under_gevent():
        import gevent

        return runner is gevent.getcurrent()
    return False


#: Most bytes a :class:`HangupWatcher` reads and drops at a time.
_DRAIN = 4096


class HangupWatcher:
    """Calls ``on_hangup`` (in a new greenlet) as soon as the client at the
    other end of socket ``fd`` hangs up.

    A server only learns that a client left when it next writes to it (an
    event or a heartbeat); an event-loop watcher on the client's socket lets
    the stream free its queue and its place at once instead. A client that
    only half-closes its socket counts as gone; browsers never do that. Bytes
    the client sends are read and dropped (a stream reads no request from
    its client), and the watcher watches on until the end of the stream or
    the client's.

    The watcher is a callback, not a greenlet blocked in ``recv``: an idle
    greenlet keeps a copy of its C stack, several kilobytes for every open
    stream (the benchmark's idle cost, issue 6). Only under gevent: without
    it, a thread per stream would cost more than the wait.
    """

    __slots__ = ("fd", "_on_hangup", "_watcher")

    def __init__(self, fd: int, on_hangup: Callable[[], None]) -> None:
        self.fd = fd
        self._on_hangup = on_hangup
        self._watcher: Any = None

    @classmethod
    def start(cls, fd: int, on_hangup: Callable[[], None]) -> HangupWatcher | None:
        """Watch ``fd``; ``None`` when not under gevent or ``fd`` cannot be watched."""
        if not under_gevent():
            return None
        from gevent import get_hub

        watcher = cls(fd, on_hangup)
        try:
            watcher._watcher = get_hub().loop.io(fd, 1)  # 1: readable
        except (OSError, ValueError):
            return None
        watcher._watcher.start(watcher._readable)
        return watcher

    def _readable(self) -> None:
        # Runs in the event loop, which must not block: read through the
        # unpatched socket type, without waiting, and hang up from a
        # greenlet, since closing a stream takes locks.
        from gevent.monkey import get_original

        original_socket = get_original("socket", "socket")
        try:
            peer = original_socket(fileno=os.dup(self.fd))
            try:
                # Bytes a client sends on an event stream (a stray CRLF after
                # the request) mean nothing: they are read and dropped, so the
                # socket is readable again only when more come or the client
                # hangs up, and the watcher keeps watching.
                data = peer.recv(_DRAIN, socket.MSG_DONTWAIT)
            finally:
                peer.close()
        except BlockingIOError:
            return  # not readable after all: keep watching
        except OSError:
            data = b""  # reset by the peer
        if data:
            return
        self.close()
        import gevent

        gevent.spawn(self._on_hangup)

    def close(self) -> None:
        """Stop watching. Idempotent; call it before the server closes the
        socket, whose descriptor may then be reused by another client."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()


class SocketWriter:
    """Writes a live stream's bytes straight to its client's socket, and
    lets the stream take the connection over from the WSGI server.

    The server offers one in the WSGI environ, under :data:`ENVIRON_KEY`,
    when it can hand the connection over: today
    :class:`~flask_notifications.ops.gunicorn_worker.GeventWorker` does. The
    server must have written every byte the response iterator yielded before
    it asks for the next, and must frame what it yields the way
    :attr:`chunked` says. Once a stream has set :attr:`stream`, the server
    writes nothing more to the connection, ends the response as soon as the
    iterator does, and then calls the stream's
    :meth:`~flask_notifications.streaming.live.LiveStream.serve` on the
    connection's greenlet before it closes the connection.

    :param sock: the connection (a gevent socket, in non-blocking mode).
    :param chunked: frame every write as an HTTP/1.1 chunk, as the server
        frames what the response iterator yields.
    """

    __slots__ = ("sock", "fd", "chunked", "stream", "_io", "_closed")

    def __init__(self, sock: socket.socket, chunked: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.chunked = chunked
        #: The live stream that took the connection over (see above).
        self.stream: Any = None
        self._io: Any = None
        self._closed = False

    @classmethod
    def for_connection(cls, sock: object, protocol: object) -> SocketWriter | None:
        """A writer for an HTTP/1.x connection ``sock`` (its request's
        ``SERVER_PROTOCOL`` is ``protocol``), or ``None`` where writing
        directly is not safe: not under gevent, TLS, another protocol, or a
        socket in blocking mode (a write could then stall the whole process).

        A response without ``Content-Length`` is framed as chunks for an
        HTTP/1.1 client, and sent as it is (the connection closing after it)
        for an HTTP/1.0 one."""
        if not under_gevent() or not isinstance(sock, socket.socket):
            return None
        import ssl

        if isinstance(sock, ssl.SSLSocket) or protocol not in ("HTTP/1.0", "HTTP/1.1"):
            return None
        try:
            if os.get_blocking(sock.fileno()):
                return None
        except OSError:
            return None
        return cls(sock, chunked=protocol == "HTTP/1.1")

    def frame(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire: one HTTP/1.1 chunk, or as it is."""
        if self.chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        return data

    def write_nowait(self, data: bytes | memoryview) -> int:
        """Write what the socket's buffer takes now, without yielding.

        :return: the number of bytes written (0 when the buffer is full).
        :raises OSError: the connection is gone, or :meth:`close` was called.
        """
        if self._closed:
            raise BrokenPipeError("The stream's connection is closed.")
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    def write(self, data: bytes) -> None:
        """Write all of ``data``, letting other greenlets run while the
        socket's buffer is full.

        :raises OSError: the connection is gone, or :meth:`close` was called.
        """
        from gevent import get_hub
        from gevent.socket import wait

        view = memoryview(data)
        while view:
            view = view[self.write_nowait(view) :]
            if view:
                if self._io is None:
                    self._io = get_hub().loop.io(self.fd, 2)  # 2: writable
                wait(self._io)

    def finish(self, last: bytes) -> None:
        """End the response: write ``last`` (a stream's last frame, or
        nothing), then, for a chunked response, the empty chunk that ends
        it, even after :meth:`close`. A client that is gone gets nothing;
        the caller closes the connection after it."""
        tail = (self.frame(last) if last else b"") + (b"0\r\n\r\n" if self.chunked else b"")
        if not tail:
            return
        try:
            self.sock.sendall(tail)
        except OSError:
            pass

    def close(self) -> None:
        """Write no more: a greenlet blocked in :meth:`write` gets an
        :class:`OSError`. The connection stays open, for :meth:`finish`.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        watcher, self._io = self._io, None
        if watcher is not None:
            from gevent.socket import cancel_wait

            cancel_wait(watcher, BrokenPipeError("The stream's connection was closed."))
            watcher.close()


#: The WSGI environ key under which a server offers a :class:`SocketWriter`
#: for the request's connection.
ENVIRON_KEY = "flask_notifications.socket_writer"
