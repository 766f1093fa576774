"""The queued mode of a stream: the WSGI server iterates its frames, so
any WSGI server serves it."""

from __future__ import annotations

import time
from collections.abc import Iterator

from .stream import Stream
from .wire import HEARTBEAT

#: Largest chunk a stream hands to the server in one write.
_CHUNK = 64 * 1024


class QueuedStream(Stream):
    """A stream whose frames the WSGI server iterates: the fan-out queues
    each event, and the stream's greenlet or thread writes what is queued
    as one chunk (up to 64 KiB) per wake-up, and a heartbeat after
    ``heartbeat`` seconds of silence. Any WSGI server serves it."""

    __slots__ = ()

    def follow(self, heartbeat: float) -> Iterator[bytes]:
        last_write = time.monotonic()
        while True:
            wait = max(0.0, heartbeat - (time.monotonic() - last_write))
            items = self.take(wait)
            if items is None:
                return
            if not items:
                if time.monotonic() - last_write >= heartbeat:
                    yield HEARTBEAT
                    last_write = time.monotonic()
                continue
            chunk: list[bytes] = []
            size = 0
            for frame in self.select(items):
                chunk.append(frame)
                size += len(frame)
                if size >= _CHUNK:
                    yield b"".join(chunk)
                    chunk, size = [], 0
            if chunk:
                yield b"".join(chunk)
                last_write = time.monotonic()
