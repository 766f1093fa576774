"""``Digest``: collect the events of each recipient for a window and hand
them to a consumer as one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConsumerError
from ..event import Event, as_event
from ..ledger.base import DigestAdd, DueTimer
from ..state import runtime
from ..timers.fire import once
from ..timers.owner import TimedConsumer, now_ms, record, where
from .consumer import Consumer
from .delayed import seconds

if TYPE_CHECKING:
    from flask import Flask

    from ..ledger.base import Ledger

#: The ``event_type`` of the event a digest hands its consumer.
DIGEST_EVENT_TYPE = "digest"
#: The title of that event unless ``title=`` says otherwise.
DEFAULT_TITLE = "{count} new notifications"

#: What ``Digest(key=...)`` takes: the name of an event field, or a function of the event.
DigestKey = str | Callable[[Event], Any] | None


def digest_group(hub_id: str, task_name: str, recipient: str, key: str) -> str:
    """The id of one digest group: a (recipient, key) of one consumer; it is
    also the id of the group's timer. Its parts are JSON-encoded, so that no
    two (recipient, key) share one (``"a:b"`` and ``""`` against ``"a"`` and
    ``"b:"``)."""
    return "digest:" + json.dumps([hub_id, task_name, recipient, key], ensure_ascii=False, separators=(",", ":"))


class Digest(TimedConsumer):
    """Collect the events for each (recipient, key) in the ledger, and once
    per ``window`` hand them to ``consumer`` as one event::

        hub.register_consumer(Digest(mail, window=timedelta(hours=1)))

    The event ``consumer`` receives is::

        Event(event_id="digest-<window's id>", event_type="digest",
              title="3 new notifications", body="", recipients=[recipient],
              events=[<each event's dict, in the order they arrived>],
              digest_key=<the key>)

    so a mail consumer renders it with its digest template. A window opens
    with the first event of a (recipient, key) and is flushed one ``window``
    later; events arriving meanwhile, even while it flushes, join it or the
    next one. Each event is listed once. A flush happens once, even when its
    worker is killed in the middle (another tick fires it again after
    ``NOTIFICATIONS_TIMER_CLAIM_LEASE``, and the claim of the first run makes the
    second skip an effect that happened).

    :param consumer: the consumer that receives each digest.
    :param window: how long events are collected, a
        :class:`~datetime.timedelta` or seconds.
    :param key: what separates digests of one recipient: ``None`` (one
        digest), the name of an event field (``"event_type"``, or an extra
        field), or a function of the event.
    :param send_first_at_once: hand the first event of a window to
        ``consumer`` at once, as it came, and digest the rest; the window
        then stays open as long as each one collects something, so a steady
        stream makes one digest per window.
    :param title: the digest's title, a format string with ``{count}``,
        ``{recipient}`` and ``{key}``.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    :raises ConsumerError: ``window`` is not positive, ``key`` is not a field
        name or a function, or ``consumer`` is not a consumer.
    """

    kind = "digest"

    def __init__(
        self,
        consumer: Consumer,
        *,
        window: timedelta | float,
        key: DigestKey = None,
        send_first_at_once: bool = False,
        title: str = DEFAULT_TITLE,
        name: str | None = None,
    ) -> None:
        super().__init__(consumer, name=name)
        self.window = seconds(window, "window")
        if key is not None and not isinstance(key, str) and not callable(key):
            raise ConsumerError(f"key is an event field's name or a function of the event, not {key!r}.")
        self.key = key
        self.send_first_at_once = bool(send_first_at_once)
        self.title = title

    def key_of(self, event: Event) -> str:
        """The digest key of ``event``."""
        if self.key is None:
            return ""
        found = self.key(event) if callable(self.key) else event.get(self.key)
        return "" if found is None else str(found)

    def consume(self, event: Event) -> None:
        """Add ``event`` to the open window of each of its recipients (or
        open one); with ``send_first_at_once``, hand it on at once to those
        whose window it opened."""
        event = as_event(event)
        hub_id, task_name, delivery_id = where(self)
        ledger = runtime().ledger
        key = self.key_of(event)
        item = json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))
        due = now_ms() + int(self.window * 1000)
        first: list[str] = []
        recipients: list[str] = event["recipients"] or [""]
        for recipient in recipients:
            group = digest_group(hub_id, task_name, recipient, key)
            fields = record(self.kind, hub_id, task_name, r=recipient, k=key)
            timer = DueTimer(group, fields, uuid.uuid4().hex, due)
            added = ledger.digest_add(timer, delivery_id, item, first_at_once=self.send_first_at_once)
            if added is DigestAdd.FIRST:
                first.append(recipient)
        if first:
            # A failure retries the task; the windows are open by then, so the event is digested.
            kept = [recipient for recipient in first if recipient]
            self.consumer(
                event if kept == event["recipients"] else Event.from_dict({**event.to_dict(), "recipients": kept})
            )

    def digest_event(self, timer: DueTimer, fields: dict[str, Any], events: list[dict[str, Any]]) -> Event:
        """The one event a window's ``events`` are handed on as."""
        recipient, key = str(fields.get("r", "")), str(fields.get("k", ""))
        title = self.title.format(count=len(events), recipient=recipient, key=key)
        return Event(
            f"digest-{timer.version}",
            DIGEST_EVENT_TYPE,
            title,
            "",
            recipients=[recipient] if recipient else [],
            events=events,
            digest_key=key,
        )

    def fire(self, app: Flask, ledger: Ledger, timer: DueTimer, fields: dict[str, Any]) -> None:
        items = ledger.digest_seal(timer.id, timer.version)
        if items is None:
            return  # finished by another run
        if items:
            digest = self.wanted_now(
                app, str(fields["h"]), self.digest_event(timer, fields, [json.loads(item) for _, item in items])
            )
            if digest is not None:  # None: the recipient opted out during the window
                once(app, ledger, timer, lambda: self.consumer(digest))
        next_due = now_ms() + int(self.window * 1000)
        keep_open = bool(items) and self.send_first_at_once
        ledger.digest_finish(timer.id, timer.version, next_due, uuid.uuid4().hex, keep_open=keep_open)

    def drop(self, ledger: Ledger, timer: DueTimer) -> None:
        """Give up the window sealed under ``timer``'s version; events that
        arrived since stay for the next window."""
        ledger.digest_finish(
            timer.id, timer.version, now_ms() + int(self.window * 1000), uuid.uuid4().hex, keep_open=False
        )
