"""The live mode of a stream: the fan-out writes each batch of events
straight to the client's socket, one non-blocking write per stream and
batch.

The server offers the connection through the WSGI environ (see
:class:`~flask_notifications.ops.gunicorn_worker.GeventWorker`). The server
writes the response's head, the stream's first frames and its replay; then
the stream takes the connection over and the response ends, and the
server's greenlet for the connection serves the rest (:meth:`LiveStream.serve`)
in a shallow frame, no longer holding the request, while it keeps its
place among the server's connections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .green import SocketWriter
from .stream import LEFT, NOT_PUSHED, WRITTEN, Stream
from .wire import HEARTBEAT, Key

if TYPE_CHECKING:
    from ..event_filter import EventFilter
    from .fanout import Fanout

logger = logging.getLogger(__name__)

#: :data:`~flask_notifications.streaming.wire.HEARTBEAT` as one HTTP/1.1
#: chunk, framed once rather than for every heartbeat.
_HEARTBEAT_CHUNK = b"%x\r\n%b\r\n" % (len(HEARTBEAT), HEARTBEAT)


class LiveStream(Stream):
    """A stream whose live events the fan-out writes to the client's
    socket itself, through a :class:`~flask_notifications.streaming.green.SocketWriter`.

    Its first frames and its replay go out through the server. Then
    :meth:`follow` takes the connection over (the writer's
    :attr:`~flask_notifications.streaming.green.SocketWriter.stream`) and
    returns, so that the server ends the response, and the server calls
    :meth:`serve` on the connection's greenlet. From then on the fan-out
    writes each batch with one non-blocking write (:meth:`push`) and the
    heartbeats (:meth:`tick`). The greenlet wakes only for what the fan-out
    cannot write at once, and writes it in order: the rest of a batch a full
    socket buffer did not take, the events of a filter the fan-out does not
    judge itself (see :mod:`~flask_notifications.streaming.routing`), and
    announcements. Once the stream is closed, it writes the last frame and
    the end of the response.
    """

    __slots__ = ("writer", "_live", "_busy", "_raw", "heartbeat", "last_write")

    def __init__(
        self,
        fanout: Fanout,
        hub_id: str,
        event_filter: EventFilter | None,
        client: str,
        queue_size: int,
        sock: Any = None,
        *,
        writer: SocketWriter,
    ) -> None:
        super().__init__(fanout, hub_id, event_filter, client, queue_size, sock)
        self.writer = writer
        self._live = False
        #: The request's greenlet is writing: the fan-out queues behind it.
        self._busy = False
        #: Bytes the fan-out could not write, already framed, to go first.
        self._raw = b""
        self.heartbeat = 0.0
        self.last_write = 0.0

    @property
    def live(self) -> bool:
        return self._live

    @property
    def handed_over(self) -> bool:
        return self.writer.stream is self

    def push(self, first: Key, last: Key, data: bytes, chunk: bytes, now: float) -> int:
        """Write the frames of a batch of events straight to the socket,
        without waking the stream's greenlet. What the socket's buffer does
        not take now, the greenlet writes before anything else.

        :param first: the key of the batch's first event.
        :param last: the key of its last event.
        :param data: the frames of its events, those the stream's filter
            passes (the fan-out judged them; see :meth:`~flask_notifications.streaming.stream.Stream.judge`).
        :param chunk: ``data`` as one HTTP/1.1 chunk.
        :param now: ``time.monotonic()``.
        :return: :data:`~flask_notifications.streaming.stream.NOT_PUSHED`
            when the stream cannot take the batch this way (it is not live
            yet, has something left to write, or the batch
            starts at or below its floor): offer the events one by one.
            Else :data:`~flask_notifications.streaming.stream.WRITTEN`, or
            :data:`~flask_notifications.streaming.stream.LEFT` when the
            socket's buffer was full and the greenlet writes the rest.
        """
        # Only under gevent, where nothing else runs between these checks
        # and the write.
        if (
            not self._live
            or self._busy
            or self._raw
            or self._queue
            or self.closed
            or first <= self.floor
            or self.repeats
        ):
            return NOT_PUSHED
        self.floor = last
        return self._write_now(chunk if self.writer.chunked else data, now)

    def tick(self, now: float) -> None:
        """Write a heartbeat if the stream has been silent for its
        heartbeat interval."""
        if (
            self._live
            and not self._busy
            and not self._raw
            and not self._queue
            and not self.closed
            and now - self.last_write >= self.heartbeat
        ):
            self._write_now(_HEARTBEAT_CHUNK if self.writer.chunked else HEARTBEAT, now)

    def _write_now(self, wire: bytes, now: float) -> int:
        try:
            sent = self.writer.write_nowait(wire)
        except OSError:
            self.close()  # the client is gone
            return WRITTEN
        self.last_write = now
        if sent < len(wire):
            with self._ready:
                self._raw = wire[sent:]
                self._ready.notify()
            return LEFT
        return WRITTEN

    def _evict(self) -> None:
        if self._live:
            # Its client does not read: end the connection now, as a
            # queued stream's does, rather than wait to write the ending.
            self.close()
            self._shutdown_socket()
        else:
            super()._evict()

    def follow(self, heartbeat: float) -> Iterator[bytes]:
        """Go live and take the connection over: the server ends the
        response (writing nothing more to the client) and calls
        :meth:`serve` once it is done with the request. Nothing is yielded:
        the server wrote everything yielded before, so the fan-out's writes
        come after it."""
        self.heartbeat = heartbeat
        self.last_write = time.monotonic()
        self._live = True
        self.writer.stream = self
        return iter(())

    def serve(self) -> None:
        """Wait while the fan-out writes; write what it leaves, in order;
        once the stream is closed, write its last frame and the end of the
        response (see :meth:`~flask_notifications.streaming.stream.Stream.ending`).
        Called by the server on the connection's greenlet, after the
        response the stream :attr:`handed_over <flask_notifications.streaming.stream.Stream.handed_over>`
        its connection in; the server closes the connection after it."""
        writer = self.writer
        try:
            while True:
                with self._ready:
                    if not self.closed and not self._raw and not self._queue:
                        self._busy = False
                        self._ready.wait(None)
                    # An ended stream first writes what is left of a frame the
                    # fan-out began, so that its reconnect frame follows whole.
                    if self.closed and not (self.ended and self._raw):
                        break
                    self._busy = True
                    raw, self._raw = self._raw, b""
                    items, self._queue = self._queue, []
                selected = b"".join(self.select(items))
                try:
                    writer.write(raw + writer.frame(selected) if selected else raw)
                except OSError:
                    # The client is gone, or the stream was closed while a
                    # frame may be half on the wire: nothing more may follow.
                    self._cut()
                    return
                self.last_write = time.monotonic()
            self._busy = False
            writer.finish(self.ending())
        finally:
            self._busy = False
            self.close()
            writer.close()  # an ended stream's writer too, before the socket closes

    def _cut(self) -> None:
        self.evicted = self.ended = False
        self.close()
        self._shutdown_socket()

    def close(self) -> None:
        """End the stream (see :meth:`Stream.close`); a greenlet blocked
        writing to it gets an :class:`OSError`, unless the stream was
        :meth:`ended <Stream.end>`: then the greenlet finishes the write it
        is in, and :meth:`serve` writes the ``reconnect`` frame after it (a
        client that reads nothing holds it until the server's graceful
        timeout, as a queued stream's does)."""
        super().close()
        if not self.ended and self._live:
            # Only a live stream writes through the writer: one closed
            # before (a failed open, which a held stream retries with the
            # same writer) leaves it to the stream that goes live.
            self._raw = b""
            self.writer.close()


class Heartbeats:
    """The live streams, filed by the second in which each may next need a
    heartbeat, so that a round of heartbeats looks at the streams due, not
    at every stream: once per heartbeat interval each, not once a second.
    Only under gevent, where the rounds and the streams share one thread."""

    def __init__(self) -> None:
        self._due: dict[int, list[LiveStream]] = {}

    def add(self, stream: LiveStream, now: float) -> None:
        self._due.setdefault(int(now) + 1, []).append(stream)

    def sweep(self, now: float) -> None:
        """Write the heartbeats due by ``now`` (see :meth:`LiveStream.tick`)."""
        second = int(now)
        for key in [key for key in self._due if key <= second]:
            for stream in self._due.pop(key):
                if stream.closed:
                    continue
                try:
                    stream.tick(now)
                except Exception:
                    logger.exception("Writing a heartbeat to %r failed.", stream)
                # A write since only puts the next heartbeat later; a stream
                # not live yet, or busy, is looked at again in a second.
                due = int(stream.last_write + stream.heartbeat) if stream.live else 0
                self._due.setdefault(max(second + 1, due), []).append(stream)

    def clear(self) -> None:
        self._due.clear()
