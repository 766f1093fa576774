"""0.1's stream outside a request: :meth:`Notifications.sse_notifier_for`."""

from __future__ import annotations

from collections.abc import Generator, Iterator

from .stream import Stream


class SseNotifier:
    """The stream of one hub, as bytes, outside a request; see
    :meth:`Notifications.sse_notifier_for`.

    :param connection: the stream's connection to the process's fan-out.
    :param retry: the reconnection delay sent to the client, in milliseconds.
    :param heartbeat: seconds between heartbeats on an idle stream.
    """

    def __init__(self, connection: Stream, *, retry: int, heartbeat: float) -> None:
        self.connection = connection
        self._frames: Generator[bytes, None, None] = _frames(connection, retry, heartbeat)

    def __iter__(self) -> Iterator[bytes]:
        return self._frames

    def close(self) -> None:
        """End the stream and release its place in the fan-out. Idempotent."""
        self._frames.close()
        self.connection.close()

    def __enter__(self) -> SseNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _frames(connection: Stream, retry: int, heartbeat: float) -> Generator[bytes, None, None]:
    yield from connection.frames(retry=retry, heartbeat=heartbeat)
