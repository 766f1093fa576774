"""A stream opened while the backend cannot be read: answered ``200``, never
``503``.

A browser's ``EventSource`` that gets anything but ``200`` gives up for good,
and every reconnect of a stream is a request with ``Last-Event-ID``, which
needs the backend. So a stream that cannot be opened because the backend is
down (or failing over) gets a :class:`HeldBody`: ``retry:`` and a
``backend-down`` event at once, then the stream is held, with heartbeats,
while it is opened again with backoff. Once it opens, ``backend-up`` follows
and then the stream, which replays from the client's ``Last-Event-ID`` (or
sends a ``gap``) as any resuming stream does. A stream still not open after
:data:`HOLD` seconds ends, and the browser reconnects after ``retry``
milliseconds with the same ``Last-Event-ID``: nothing is lost either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator

from ..backoff import backoff
from ..errors import BackendError, TooManyStreamsError
from .wire import HEARTBEAT, backend_frame, encode_event

logger = logging.getLogger(__name__)

#: Seconds a stream is held open while the backend cannot be read.
HOLD = 60.0
#: Bounds, in seconds, of the wait between two attempts to open it.
RETRY_BASE = 0.5
RETRY_MAX = 5.0

#: What an opener returns: the stream's frames, and what ends it.
Opened = tuple[Iterator[bytes], Callable[[], None]]


class HeldBody:
    """The body of a ``200`` answer to a stream whose backend could not be
    read when it was asked for.

    :param opener: opens the stream; raises :class:`BackendError` while the
        backend cannot be read.
    :param retry: the reconnection delay sent to the browser, in milliseconds.
    :param backend_down: tells whether the process's fan-out still counts the
        backend as down, in which case it announces ``backend-up`` itself.
    :param hold: seconds to keep trying before the stream ends.
    """

    def __init__(
        self,
        opener: Callable[[], Opened],
        *,
        retry: int,
        backend_down: Callable[[], bool],
        hold: float = HOLD,
    ) -> None:
        self._opener = opener
        self._retry = retry
        self._backend_down = backend_down
        self._hold = hold
        self._close: Callable[[], None] | None = None
        self._closed = False
        self._frames = self._run()

    def __iter__(self) -> Iterator[bytes]:
        return self._frames

    def _run(self) -> Generator[bytes, None, None]:
        yield encode_event(None, retry=self._retry) + backend_frame(False)
        deadline = time.monotonic() + self._hold
        failures = 0
        while not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, RETRY_BASE + backoff(failures, RETRY_BASE, RETRY_MAX)))
            try:
                frames, close = self._opener()
            except BackendError as exc:
                failures += 1
                logger.debug("A held stream still cannot be opened: %s", exc)
                yield HEARTBEAT
                continue
            except TooManyStreamsError:
                return
            self._close = close
            if self._closed:
                close()
                return
            if not self._backend_down():
                # Else the stream carries the fan-out's own backend-down,
                # and its listener announces backend-up once it reads again.
                yield backend_frame(True)
            yield from frames
            return

    def close(self) -> None:
        """End the stream, opened or not."""
        self._closed = True
        self._frames.close()
        if self._close is not None:
            self._close()
