"""What the fan-out tells its streams besides events: that the backend cannot
be read (``backend-down``), that it answers again (``backend-up``), and that
events were lost (``gap``).

Nothing is dropped silently. The subscription finds the losses on every read:
the listener fell behind the history (an overrun) or the backend's ids went
backwards (a reset). A backend whose subscription cannot find them (RabbitMQ
keeps no history) is asked, once it answers again after an outage, whether
its history still reaches back to the newest id handed out for each hub.

:class:`Announcements` shares the fan-out's lock and its table of hubs: an
announcement is queued on a stream under the same lock as the events, so a
stream sees them in the order they happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..backends.base import Backend, Lost, Subscription
from ..errors import BackendError
from .registry import HubStreams
from .stream import Stream
from .wire import backend_frame, format_id, gap_frame

logger = logging.getLogger(__name__)


class Announcements:
    """The outage and loss announcements of one
    :class:`~flask_notifications.streaming.fanout.Fanout`.

    :param backend: the fan-out's backend, asked for its history after an
        outage of a subscription that does not track its losses.
    :param lock: the fan-out's lock, which guards ``hubs`` and ``stats``.
    :param hubs: the fan-out's hubs, by id.
    :param stats: the fan-out's counters; this counts ``outages`` and ``gaps``.
    :param on_outage: called with the exception when the backend stops
        answering, once per outage, in the listener.
    :param on_recovery: called with the number of failed reads when it
        answers again.
    """

    def __init__(
        self,
        backend: Backend,
        lock: threading.Lock,
        hubs: dict[str, HubStreams],
        stats: Counter[str],
        *,
        on_outage: Callable[[BaseException], None] | None = None,
        on_recovery: Callable[[int], None] | None = None,
    ) -> None:
        self.backend = backend
        self.lock = lock
        self.hubs = hubs
        self.stats = stats
        self.on_outage = on_outage
        self.on_recovery = on_recovery
        #: Since when the backend cannot be read, or ``None``; read and
        #: written under :attr:`lock`.
        self.down_since: float | None = None

    def _streams(self) -> list[Stream]:
        with self.lock:
            return [stream for hub in self.hubs.values() for stream in hub.streams]

    def outage_began(self, exc: BaseException) -> None:
        """Tell every stream ``backend-down``, once per outage."""
        with self.lock:
            self.down_since = time.monotonic()
            self.stats["outages"] += 1
        streams = self._streams()
        logger.warning(
            "The notifications backend cannot be read (%s); telling %d streams, and retrying with backoff.",
            exc,
            len(streams),
            exc_info=not isinstance(exc, BackendError),
        )
        frame = backend_frame(False)
        for stream in streams:
            stream.announce(frame)
        self._callback(self.on_outage, exc)

    def outage_ended(self, subscription: Subscription, failures: int) -> None:
        """Tell every stream ``backend-up``, after a ``gap`` where events
        may have been lost that ``subscription`` cannot tell of."""
        with self.lock:
            since, self.down_since = self.down_since, None
        streams = self._streams()
        logger.warning(
            "The notifications backend answers again after %.1fs and %d failed reads; telling %d streams.",
            time.monotonic() - (since or time.monotonic()),
            failures,
            len(streams),
        )
        if not subscription.tracks_losses:
            self._announce_unverifiable()
        frame = backend_frame(True)
        for stream in streams:
            stream.announce(frame)
        self._callback(self.on_recovery, failures)

    def _callback(self, func: Callable[..., None] | None, *args: Any) -> None:
        if func is None:
            return
        try:
            func(*args)
        except Exception:
            logger.exception("The stream outage handler %r failed.", func)

    def losses(self, losses: list[Lost]) -> None:
        """Send a ``gap`` event to every stream of each hub that lost events."""
        for lost in losses:
            reset = lost.reason == "reset"
            with self.lock:
                hub = self.hubs.get(lost.channel)
                if hub is None:
                    continue
                if reset:
                    hub.cursor = (0, 0)
                streams = list(hub.streams)
                recent = list(hub.recent)
                self.stats["gaps"] += len(streams)
            if lost.reason == "failover":
                # The hub's latest events may be published again, under new
                # ids, by tasks that the old master had handed out when it
                # took their writes (the publish, the claim, the
                # acknowledgement) with it: each stream skips those it wrote.
                for stream in streams:
                    stream.expect_repeats(recent)
            logger.warning(
                "Events of hub %r after %s were lost (%s); telling %d streams.",
                lost.channel,
                lost.after_id,
                lost.reason,
                len(streams),
            )
            # A reset's gap carries no id: each stream follows it with the
            # id its client resumes from (Stream.frames).
            frame = gap_frame(lost.after_id, oldest_id=None, reason=lost.reason, with_id=not reset)
            for stream in streams:
                stream.announce(frame, reset=reset)

    def _announce_unverifiable(self) -> None:
        """After an outage of a backend whose subscription does not report
        its losses, ask the history whether it can still deliver what
        followed the newest id handed out for each hub; where it cannot,
        every stream of the hub gets a ``gap`` event."""
        with self.lock:
            hubs = [(hub_id, hub.cursor) for hub_id, hub in self.hubs.items() if hub.streams]
        losses = []
        for hub_id, cursor in hubs:
            try:
                lost = self.backend.history(hub_id, format_id(cursor), limit=1).gap
            except BackendError:
                lost = True
            if lost:
                losses.append(Lost(hub_id, format_id(cursor), "outage"))
        self.losses(losses)
