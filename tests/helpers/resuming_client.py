"""An SSE client that behaves as a browser's ``EventSource`` does: it
reconnects whenever its stream ends or fails, sending the last id it saw as
``Last-Event-ID``, and keeps every event it ever received."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

from flask_notifications import Event
from tests.helpers.sse_client import SSEClient, SSEEvent, StreamClosed


def _close_half_built(exc: BaseException) -> None:
    """Close the socket of an SSEClient whose constructor raised (it does
    not close it itself), found in the frames the exception went through."""
    tb = exc.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, SSEClient) and hasattr(candidate, "sock"):
            candidate.sock.close()
        tb = tb.tb_next


#: The events a stream sends that are not published events.
ANNOUNCEMENTS = ("gap", "backend-down", "backend-up", "reconnect")


class ResumingClient(threading.Thread):
    """Read ``url`` until :meth:`stop`, reconnecting after ``retry`` seconds."""

    def __init__(self, url: str, retry: float = 0.2, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.retry = retry
        self.headers = headers
        self.events: list[SSEEvent] = []
        self.last_event_id: str | None = None
        self.statuses: Counter[int] = Counter()
        self.connections = 0
        #: Events received, announcements excluded: what a test waits on
        #: (cheap to read while hundreds of clients run).
        self.received = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                with SSEClient(self.url, last_event_id=self.last_event_id, headers=self.headers, timeout=5) as client:
                    self.statuses[client.status] += 1
                    if client.status == 200:
                        self.connections += 1
                        self._read(client)
            except (OSError, StreamClosed, ValueError, IndexError) as exc:
                # Refused, reset or cut mid-head: as a browser, try again.
                _close_half_built(exc)
            self._halt.wait(self.retry)

    def _read(self, client: SSEClient) -> None:
        try:
            while not self._halt.is_set():
                try:
                    event = client.next_event(timeout=0.5)
                except TimeoutError:
                    continue
                finally:
                    # The start frame sets an id too: resume from there even
                    # when nothing arrived yet.
                    self.last_event_id = client.last_event_id or self.last_event_id
                self.events.append(event)
                if event.type not in ANNOUNCEMENTS:
                    self.received += 1
        except StreamClosed:
            pass

    def event_ids(self, event_type: str | None = None) -> list[str]:
        """The ``event_id`` of every event received, announcements (gaps,
        backend down and up) excluded."""
        return [
            json.loads(e.data)["event_id"]
            for e in self.events
            if e.type not in ANNOUNCEMENTS and (event_type is None or e.type == event_type)
        ]

    def gaps(self) -> int:
        return sum(1 for e in self.events if e.type == "gap")

    def count(self, event_type: str) -> int:
        """How many events of ``event_type`` it received."""
        return sum(1 for e in self.events if e.type == event_type)

    def halt(self) -> None:
        """Ask it to stop, without waiting."""
        self._halt.set()

    def stop(self) -> None:
        self.halt()
        self.join(timeout=30)


def stop_all(clients: list[ResumingClient]) -> None:
    """Stop every client of ``clients``: all are asked first, then each is
    waited for, so they wind down together rather than one after another."""
    for client in clients:
        client.halt()
    for client in clients:
        client.join(timeout=30)


class SteadyPublisher(threading.Thread):
    """Publish ``count`` events to ``hub_id`` at ``rate`` a second through
    ``backend`` (as PushConsumer does), keeping their event ids in order in
    :attr:`published`; event ``seq`` has the id ``f"{prefix}-{seq}"``."""

    def __init__(self, backend: Any, hub_id: str, prefix: str, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.backend = backend
        self.hub_id = hub_id
        self.prefix = prefix
        self.count = count
        self.rate = rate
        self.published: list[str] = []

    def run(self) -> None:
        start = time.monotonic()
        for seq in range(self.count):
            event = Event(f"{self.prefix}-{seq}", "news", f"event {seq}", "body", seq=seq)
            self.backend.publish(self.hub_id, event.to_json())
            self.published.append(event["event_id"])
            time.sleep(max(0.0, start + (seq + 1) / self.rate - time.monotonic()))
