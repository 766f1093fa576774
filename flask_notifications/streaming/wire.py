"""Server-sent events: the wire format of the streams.

Wire encoding
-------------
:func:`encode_event` writes a frame that the event-stream parser of the
WHATWG HTML standard reads back exactly as it was given:

- the data is cut into ``data:`` lines at CR LF, CR and LF, the only line ends
  that parser knows. :meth:`str.splitlines` must not be used: it also cuts at
  U+000B, U+000C, U+001C to U+001E, U+0085, U+2028 and U+2029, which the
  parser keeps inside a line, so the data would arrive changed. Event JSON is
  written with ``ensure_ascii=False`` and carries U+2028 and U+2029 literally.
- an event name or id holding a control character (U+0000 to U+001F, U+007F
  to U+009F) is refused with :class:`~flask_notifications.errors.StreamFormatError`:
  a CR or LF would end the field and let what follows be read as fields of
  its own (a forged id, say), and a browser ignores an id holding NUL.
- ``retry`` must be a non-negative integer.

The encoder is written here rather than taken from the ``sse`` package, whose
1.2 release writes the event name and id as given: with it, an event type
holding a newline could inject fields into every stream of a hub.

Streams
-------
Every event frame carries an ``id:``, the backend's message id. A stream
opens with ``retry:`` and an ``id:``-only frame that sets the browser's last
event id to where the stream starts, so even a client that received nothing
resumes from the right place. A comment (``: heartbeat``) goes out when the
stream has been idle for ``NOTIFICATIONS_SSE_HEARTBEAT`` seconds.

Besides the events, a stream carries announcements: ``gap`` (events it
should have carried are not coming; see :func:`gap_frame`),
``backend-down`` / ``backend-up`` while the backend cannot be read, and
``reconnect`` as the last frame of a stream whose server process stops
(:func:`reconnect_frame`).

The fan-out that feeds the streams lives in :mod:`flask_notifications.streaming.fanout`.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping
from typing import Any

from ..backends.base import Message, parse_id
from ..errors import StreamFormatError
from ..event import CONTROL_CHARACTERS

logger = logging.getLogger(__name__)

#: Characters no event name or id may hold: the C0 and C1 controls and DEL.
#: The line ends of the WHATWG event-stream parser, and no others.
_LINE_END = re.compile("\r\n|\r|\n")
#: A message id, as the backends write it and a client may send it back.
_MESSAGE_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_ID_PART_MAX = 2**64 - 1

#: The comment written on an idle stream.
HEARTBEAT = b": heartbeat\n\n"
#: The comment that ends the stream of a client that fell behind.
EVICTED = b": too far behind; reconnect with Last-Event-ID\n\n"
#: Name of the event that tells a client the history lost events it missed.
GAP_EVENT = "gap"

Key = tuple[int, int]

#: Name of the event sent when the backend stops answering, and when it answers again.
BACKEND_DOWN_EVENT = "backend-down"
BACKEND_UP_EVENT = "backend-up"
#: Name of the event that ends a stream because its server process stops.
RECONNECT_EVENT = "reconnect"


def _checked(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise StreamFormatError(f"An SSE {field} must be a string, got {type(value).__name__}.")
    found = CONTROL_CHARACTERS.search(value)
    if found is not None:
        raise StreamFormatError(
            f"The SSE {field} {value[:64]!r} holds the control character U+{ord(found.group()):04X}; "
            f"an event {field} may not contain control characters such as CR, LF or NUL."
        )
    return value


def encode_event(
    data: str | None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one server-sent events frame, as UTF-8.

    ::

        encode_event('{"a": 1}', event="user", id="1700000000000-0")
        # b'id: 1700000000000-0\\nevent: user\\ndata: {"a": 1}\\n\\n'

    :param data: the data; ``None`` writes a frame without data, which a
        browser does not dispatch but whose ``id`` and ``retry`` it applies.
        A CR LF or CR in the data arrives as LF: a frame joins its data lines
        with LF. (Event JSON escapes both, so it arrives byte for byte.)
    :param event: the event name; ``None`` lets the browser use ``message``.
    :param id: the event id, which the browser sends back as ``Last-Event-ID``.
    :param retry: the reconnection delay, in milliseconds.
    :raises StreamFormatError: the name or id holds a control character, the
        retry is not a non-negative integer, or a value is not valid Unicode.
    """
    lines: list[str] = []
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise StreamFormatError(f"An SSE retry must be a non-negative integer of milliseconds, got {retry!r}.")
        lines.append(f"retry: {retry}\n")
    if id is not None:
        lines.append(f"id: {_checked('id', id)}\n")
    if event is not None:
        lines.append(f"event: {_checked('name', event)}\n")
    if data is not None:
        if not isinstance(data, str):
            raise StreamFormatError(f"SSE data must be a string, got {type(data).__name__}.")
        lines.extend(f"data: {line}\n" for line in _LINE_END.split(data))
    lines.append("\n")
    try:
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StreamFormatError(f"An SSE frame must be valid Unicode text: {exc}.") from exc


def encode_comment(text: str = "") -> bytes:
    """Encode a comment line, which a browser ignores; lines are split as
    for data, each becoming a comment of its own."""
    return "".join(f": {line}\n" for line in _LINE_END.split(text)).encode("utf-8") + b"\n"


def parse_last_event_id(value: str | None) -> str | None:
    """Validate a ``Last-Event-ID`` a client sent.

    :return: the id, or ``None`` when ``value`` is ``None`` or empty.
    :raises StreamFormatError: it is not a message id (``"<digits>-<digits>"``,
        at most 41 characters), which no stream of this extension sends.
    """
    if value is None or value == "":
        return None
    if len(value) > 41 or not _MESSAGE_ID.fullmatch(value) or not _storable(parse_id(value)):
        raise StreamFormatError(
            f"Last-Event-ID {value[:48]!r} is not an event id of this stream; ids look like "
            "'1700000000000-0'. Send the id of the last event received, or nothing to start afresh."
        )
    return value


def _storable(key: Key) -> bool:
    # Stream ids are two unsigned 64-bit parts, and nothing can come after the
    # largest one: Redis refuses such an id as a range start.
    return key[0] <= _ID_PART_MAX and key[1] <= _ID_PART_MAX and key != (_ID_PART_MAX, _ID_PART_MAX)


def event_frame(message: Message, event: Mapping[str, Any] | None, *, named: bool = True) -> bytes:
    """The frame of a published event: its id, its ``event_type`` as the
    event name, and its JSON as the data.

    An ``event_type`` that cannot be an event name (it holds a control
    character) is left out, so the event still arrives, as a ``message``.

    :param named: name the event after its type; ``False`` sends every event
        unnamed, as 0.1 did, for pages that listen with ``source.onmessage``
        (``NOTIFICATIONS_SSE_EVENT_NAMES``).
    :raises StreamFormatError: the message id cannot be written.
    """
    name = event.get("event_type") if event is not None and named else None
    if isinstance(name, str) and name:
        try:
            return encode_event(message.data, event=name, id=message.id)
        except StreamFormatError:
            logger.warning(
                "Event %s of hub %r has an event_type that cannot be an SSE event name; "
                "it is streamed as a 'message' event.",
                message.id,
                message.channel,
            )
    return encode_event(message.data, id=message.id)


def format_id(key: Key) -> str:
    """A message id, from its sortable form."""
    return f"{key[0]}-{key[1]}"


def gap_frame(
    last_event_id: str, *, oldest_id: str | None, reason: str, id: str | None = None, with_id: bool = True
) -> bytes:
    """The ``gap`` event: events after ``last_event_id`` that the stream
    should have carried are not coming, so the client must refetch.

    :param oldest_id: the oldest id the history still holds after it, if known.
    :param reason: ``"trimmed"`` (the history no longer reaches back to the
        id), ``"ahead"`` (the id is newer than any of the hub's), ``"overrun"``
        (the server fell behind the history), ``"reset"`` (the backend's ids
        went backwards: it restarted empty), ``"failover"`` (a replica took
        over from a failed master, whose last writes may not have reached
        it) or ``"outage"`` (the backend cannot tell what it dropped while
        unreachable).
    :param id: the frame's id, where the client resumes from; defaults to
        ``last_event_id``.
    :param with_id: ``False`` writes no id, so the client's
        ``Last-Event-ID`` stays what it was (the stream then says where the
        client resumes from in a frame of its own).
    """
    data = {"last_event_id": last_event_id, "oldest_id": oldest_id, "reason": reason}
    if not with_id:
        return encode_event(json.dumps(data), event=GAP_EVENT)
    return encode_event(json.dumps(data), event=GAP_EVENT, id=last_event_id if id is None else id)


def reconnect_frame(retry: int) -> bytes:
    """The ``reconnect`` event that ends a stream when its server process
    stops (a graceful restart): the browser reconnects, to another process,
    and resumes from its ``Last-Event-ID``. It carries no id, and a
    ``retry`` drawn at random up to ``retry`` milliseconds, so the clients
    of a stopping process do not all come back in the same instant.

    :param retry: the stream's reconnection delay, in milliseconds.
    """
    return encode_event(
        json.dumps({"reason": "shutdown"}), event=RECONNECT_EVENT, retry=random.randint(0, max(0, retry))
    )


def backend_frame(available: bool) -> bytes:
    """The ``backend-down`` or ``backend-up`` event: live events stop (or
    resume) because the backend cannot (or can again) be read. It carries no
    id, so the client's ``Last-Event-ID`` stays the last event's."""
    name = BACKEND_UP_EVENT if available else BACKEND_DOWN_EVENT
    return encode_event(json.dumps({"backend": "up" if available else "down"}), event=name)
