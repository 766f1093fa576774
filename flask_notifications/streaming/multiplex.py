"""One stream for several hubs: ``GET <prefix>/events?hub=a&hub=b``.

A browser holds at most six HTTP/1.1 connections to a host. A page that
streams three hubs in two tabs would take all of them; a multiplexed stream
carries every hub a page follows over one connection.

It is built on the process's :class:`~flask_notifications.streaming.fanout.Fanout`:
one :class:`~flask_notifications.streaming.fanout.Stream` per hub, each with
its own filter, replay, gaps and announcements, whose frames are merged into
one response.

The wire
--------
- The stream opens with ``retry:`` and a ``hubs`` event, ``{"hubs": ["news",
  "private"]}``, whose id says where each hub starts.
- Every event goes out unnamed (a ``message``). Its data names its hub::

      {"hub": "news", "id": "1700000000000-0", "type": "user", "event": {...the event...}}

  ``id`` is the event's id in its hub, ``type`` the name the single-hub
  stream would give it.
- ``gap`` carries the hub too: ``{"hub": "news", "last_event_id": ...,
  "oldest_id": ..., "reason": ...}``, with that hub's ids.
- ``backend-down`` and ``backend-up`` go out once for the connection, not
  once per hub; ``reconnect`` once, as the last frame.

The event id
------------
The ``id:`` of every frame holds each hub's position, so that a resume, by
the browser's ``Last-Event-ID`` or a ``last_event_id`` query parameter,
replays every hub from where it was::

    <label>:<message id>[,<label>:<message id>]...
    news:1700000000000-0,private:1700000000123-4

``<label>`` is the hub's label, percent-encoded (RFC 3986, nothing kept but
letters, digits and ``-._~``; a label never holds ``%``), and ``<message id>``
the id of the last event that hub's stream passed (as ``Last-Event-ID`` of a
single-hub stream). Hubs are listed in the order of the request. A hub
the id does not name starts from its newest event; a label the request does
not ask for is ignored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from flask import Request, Response, current_app, request
from werkzeug.exceptions import BadRequest, Forbidden, NotFound, TooManyRequests

from .. import signals
from ..errors import BackendError, HubError, StreamFormatError, TooManyStreamsError
from ..event_filter import EventFilter
from ..event_hub import HUB_ID_PREFIX, EventHub, hub_id_for
from .green import HangupWatcher, make_wakeup, spawn
from .held import HeldBody, Opened
from .server import client_fd, client_socket
from .wire import (
    BACKEND_DOWN_EVENT,
    BACKEND_UP_EVENT,
    EVICTED,
    GAP_EVENT,
    HEARTBEAT,
    RECONNECT_EVENT,
    encode_event,
    parse_last_event_id,
    reconnect_frame,
)

if TYPE_CHECKING:
    from ..state import Runtime
    from .stream import Stream

logger = logging.getLogger(__name__)

#: The first event of a multiplexed stream: the hubs it carries, and (in
#: its id) where each starts.
HUBS_EVENT = "hubs"
#: Most hubs one multiplexed stream carries.
MAX_HUBS = 20
#: Longest multiplexed ``Last-Event-ID`` accepted.
MAX_ID_LENGTH = MAX_HUBS * (3 * 100 + 1 + 41 + 1)
#: The per-hub streams write no heartbeats of their own: the connection does.
_CHILD_HEARTBEAT = 24 * 3600.0


def format_position(positions: Mapping[str, str]) -> str:
    """The multiplexed event id of ``positions``, a message id by hub label."""
    return ",".join(f"{quote(label, safe='')}:{message_id}" for label, message_id in positions.items())


def parse_position(value: str | None) -> dict[str, str]:
    """The message id by hub label that a multiplexed event id holds.

    :return: ``{}`` for ``None`` or an empty id.
    :raises StreamFormatError: it is not such an id.
    """
    if not value:
        return {}
    if len(value) > MAX_ID_LENGTH:
        raise StreamFormatError(f"A multiplexed Last-Event-ID is at most {MAX_ID_LENGTH} characters long.")
    positions: dict[str, str] = {}
    for part in value.split(","):
        quoted, sep, message_id = part.partition(":")
        label = ""
        try:
            # errors="strict": "%FF" is no UTF-8, so no label (400, not 500).
            label = unquote(quoted, errors="strict") if sep else ""
            hub_id_for(label)
            checked = parse_last_event_id(message_id)
        except (HubError, StreamFormatError, UnicodeDecodeError):
            checked = None
        if checked is None or label in positions:
            raise StreamFormatError(
                f"Last-Event-ID {value[:64]!r} is not an event id of a multiplexed stream; ids look like "
                "'news:1700000000000-0,private:1700000000001-0'. Send the id of the last event received, "
                "or nothing to start afresh."
            )
        positions[label] = checked
    return positions


class _Frame:
    """The fields of one frame a per-hub stream wrote."""

    __slots__ = ("id", "event", "data", "comment")

    def __init__(self) -> None:
        self.id: str | None = None
        self.event: str | None = None
        self.data: list[str] | None = None
        self.comment: bytes | None = None


def _parse_frames(chunk: bytes) -> Iterable[_Frame]:
    """The frames of a chunk of a per-hub stream: whole frames, as
    :func:`~flask_notifications.streaming.wire.encode_event` wrote them."""
    for block in chunk.split(b"\n\n"):
        if not block:
            continue
        frame = _Frame()
        for raw in block.split(b"\n"):
            line = raw.decode("utf-8")
            if line.startswith(":"):
                frame.comment = raw + b"\n\n"
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                frame.id = value
            elif name == "event":
                frame.event = value
            elif name == "data":
                frame.data = [*(frame.data or []), value]
        yield frame


class Multiplex:
    """The frames of several hubs' streams, merged into one response.

    Each hub's frames wait in one buffer of at most ``queue_size`` frames in
    all. While a hub's stream replays, a full buffer holds it back (the
    history keeps what it has not read yet); a live frame that finds it full
    evicts the whole stream, as a single hub's stream is evicted: it ends,
    the client's socket is shut down, and the client resumes from its
    ``Last-Event-ID``.

    :param retry: the reconnection delay sent to the browser, in milliseconds.
    :param heartbeat: seconds of silence after which a heartbeat goes out.
    :param queue_size: the most frames waiting to be written, in all.
    :param sock: the client's socket, shut down when the stream is evicted.
    """

    def __init__(self, *, retry: int, heartbeat: float, queue_size: int = 512, sock: Any = None) -> None:
        self.retry = retry
        self.heartbeat = heartbeat
        self.queue_size = max(1, queue_size)
        #: Whether it fell more than ``queue_size`` frames behind.
        self.evicted = False
        self._socket = sock
        self._pending = 0
        self._runtime: Runtime | None = None
        #: The message id by hub label of the last frame of each hub.
        self.positions: dict[str, str] = {}
        self._streams: dict[str, Stream] = {}
        self._items: list[tuple[str, bytes | None]] = []
        self._wakeup = make_wakeup()
        self._lock = threading.Lock()
        self._closed = False
        self._down: set[str] = set()
        self._reconnecting = False
        #: The id of the last frame written that had one.
        self._sent = ""
        self._watcher: HangupWatcher | None = None

    def open(
        self, runtime: Runtime, hubs: list[tuple[str, str, EventFilter | None, str | None]], **options: Any
    ) -> None:
        """Open a stream of each hub on the process's fan-out.

        :param hubs: ``(label, hub_id, filter, last_event_id)`` of each hub.
        :param options: passed on to :meth:`Fanout.open <flask_notifications.streaming.fanout.Fanout.open>`.
        :raises TooManyStreamsError: the client holds too many streams.
        :raises BackendError: the backend cannot be read; nothing stays open.
        """
        self._runtime = runtime
        fanout = runtime.fanout
        try:
            for label, hub_id, event_filter, last_event_id in hubs:
                if label in self._streams:
                    raise ValueError(f"Hub {label!r} is named twice; each hub is streamed once.")
                stream = fanout.open(
                    hub_id,
                    event_filter=event_filter,
                    last_event_id=last_event_id,
                    queue_size=self.queue_size,
                    **options,
                )
                self._streams[label] = stream
                # A resuming stream of a stopping process keeps the client's id.
                ended = stream.ended and last_event_id is not None
                self.positions[label] = last_event_id if ended and last_event_id else stream.start_id
        except BaseException:
            self.close()
            raise
        for label, stream in self._streams.items():
            spawn(self._pump, label, stream, name="flask-notifications-multiplex")

    def watch_hangup(self, fd: int) -> None:
        """Under gevent, close the streams as soon as the client hangs up."""
        self._watcher = HangupWatcher.start(fd, self.close)

    def _pump(self, label: str, stream: Stream) -> None:
        try:
            for chunk in stream.frames(retry=self.retry, heartbeat=_CHILD_HEARTBEAT):
                if not self._put(label, chunk, stream):
                    return
        except Exception:
            logger.exception("The stream of hub %r of a multiplexed stream failed.", label)
        finally:
            with self._wakeup:
                self._items.append((label, None))
                self._wakeup.notify_all()

    def _put(self, label: str, chunk: bytes, stream: Stream) -> bool:
        """Queue a chunk of hub ``label``'s stream.

        :return: ``False`` once the stream is closed or evicted.
        """
        count = chunk.count(b"\n\n")
        with self._wakeup:
            while stream.replaying and self._pending and self._pending + count > self.queue_size and not self._closed:
                # A replay waits for room: the history holds what it has not read.
                self._wakeup.wait(1.0)
            if self._closed:
                return False
            full = self._pending > 0 and self._pending + count > self.queue_size
            if not full:
                self._items.append((label, chunk))
                self._pending += count
                self._wakeup.notify_all()
        if full:
            self._evict()
            return False
        return True

    def _evict(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.evicted = True
        logger.info("Evicted a multiplexed stream: more than %d frames behind.", self.queue_size)
        if self._runtime is not None:
            self._runtime.fanout.count("evicted")
        if self._socket is not None:
            # Ends a write that the client's full window blocks.
            try:
                self._socket.shutdown(2)
            except OSError:
                pass
        self.close()

    def frames(self) -> Generator[bytes, None, None]:
        """The bytes of the response, until a hub's stream ends (the client
        then reconnects with the id of every hub) or :meth:`close`."""
        try:
            # Named, so that a client sees where each hub starts (a browser
            # keeps an id-only frame's id to itself).
            hubs = json.dumps({"hubs": list(self.positions)}, ensure_ascii=False)
            self._sent = format_position(self.positions)
            yield encode_event(hubs, event=HUBS_EVENT, retry=self.retry, id=self._sent)
            last_write = time.monotonic()
            while True:
                with self._wakeup:
                    if not self._items and not self._closed:
                        self._wakeup.wait(max(0.0, self.heartbeat - (time.monotonic() - last_write)))
                    items, self._items = self._items, []
                    self._pending = 0
                    self._wakeup.notify_all()
                if self._closed:
                    if self.evicted:
                        yield EVICTED
                    return
                if not items:
                    if time.monotonic() - last_write >= self.heartbeat:
                        yield HEARTBEAT
                        last_write = time.monotonic()
                    continue
                out: list[bytes] = []
                ended = False
                for label, chunk in items:
                    if chunk is None:
                        ended = True
                        break
                    out.extend(self._translate(label, chunk))
                if out:
                    yield b"".join(out)
                    last_write = time.monotonic()
                if ended:
                    return
        finally:
            self.close()

    def _translate(self, label: str, chunk: bytes) -> Iterable[bytes]:
        """The frames of the connection for a chunk of hub ``label``'s stream."""
        for frame in _parse_frames(chunk):
            if frame.comment is not None:
                if frame.comment == EVICTED:
                    yield EVICTED
                continue
            if frame.id is not None:
                self.positions[label] = frame.id
            if frame.data is None:
                continue
            data = "\n".join(frame.data)
            position = None
            if frame.id is not None:
                position = self._sent = format_position(self.positions)
            if frame.event == GAP_EVENT:
                gap = json.loads(data)
                yield encode_event(json.dumps({"hub": label, **gap}), event=GAP_EVENT, id=position)
            elif frame.event == BACKEND_DOWN_EVENT:
                if not self._down:
                    yield encode_event(data, event=BACKEND_DOWN_EVENT)
                self._down.add(label)
            elif frame.event == BACKEND_UP_EVENT:
                if label in self._down:
                    self._down.discard(label)
                    if not self._down:
                        yield encode_event(data, event=BACKEND_UP_EVENT)
            elif frame.event == RECONNECT_EVENT:
                if not self._reconnecting:
                    self._reconnecting = True
                    yield reconnect_frame(self.retry)
            else:
                try:
                    event: Any = json.loads(data)
                except ValueError:
                    event = data
                envelope = {"hub": label, "id": frame.id, "type": frame.event or "message", "event": event}
                yield encode_event(json.dumps(envelope, ensure_ascii=False), id=position)
        position = format_position(self.positions)
        if position != self._sent:
            # Where the client resumes from, when no event carried it.
            self._sent = position
            yield encode_event(None, id=position)

    def close(self) -> None:
        """Close every hub's stream. Idempotent."""
        with self._lock:
            streams = list(self._streams.values())
            watcher, self._watcher = self._watcher, None
            self._closed = True
        if watcher is not None:
            watcher.close()
        for stream in streams:
            stream.close()
        with self._wakeup:
            self._wakeup.notify_all()


def _find(runtime: Runtime, name: str, req: Request) -> tuple[str, str, EventFilter | None]:
    """The label, id and authorizer's filter of hub ``name`` (its id or label).

    :raises Forbidden: the authorizer refuses it (whether it exists or not).
    :raises NotFound: there is no such hub.
    """
    hubs = runtime.extension.hubs
    hub = next((hubs[key] for key in (name, HUB_ID_PREFIX + name) if key in hubs), None)
    if hub is None:
        try:
            stranger = EventHub(name.removeprefix(HUB_ID_PREFIX))
        except HubError:
            raise NotFound(f"There is no hub {name!r}.") from None
        if runtime.authorize(stranger, req) is False:
            raise Forbidden(f"You may not read the events of hub {stranger.hub_id!r}.")
        raise NotFound(f"There is no hub {name!r}.")
    verdict = runtime.authorize(hub, req)
    if verdict is False:
        raise Forbidden(f"You may not read the events of hub {hub.hub_id!r}.")
    return hub.label, hub.hub_id, None if verdict is True else verdict


def multiplexed_response(
    runtime: Runtime, names: list[str], filters: Mapping[str, EventFilter] | None = None
) -> Response:
    """Answer the current request with one stream of the hubs ``names``
    (ids or labels), each through the
    :meth:`~flask_notifications.Notifications.stream_authorizer` and, if
    given, its filter in ``filters`` (by label).

    The refusals are those of
    :func:`~flask_notifications.streaming.views.stream_response`, for any of
    the hubs: ``403``, ``404``, ``400`` (no hub, more than :data:`MAX_HUBS`,
    or a ``Last-Event-ID`` that is not a multiplexed id) and ``429``; a
    backend that cannot be read gets ``200`` and ``backend-down``, and the
    stream is held until it answers.
    """
    try:
        return _multiplexed_response(runtime, names, filters or {})
    except (BadRequest, Forbidden, NotFound, TooManyRequests) as exc:
        signals.stream_refused.send(runtime.app, hub_id=",".join(names), status=exc.code)
        raise


def _multiplexed_response(runtime: Runtime, names: list[str], filters: Mapping[str, EventFilter]) -> Response:
    config = current_app.config
    if not names:
        raise BadRequest("Name the hubs to stream: ?hub=a&hub=b.")
    unique = list(dict.fromkeys(names))
    if len(unique) > MAX_HUBS:
        raise BadRequest(f"A stream carries at most {MAX_HUBS} hubs, not {len(unique)}.")
    found: list[tuple[str, str, EventFilter | None]] = []
    for name in unique:
        hub = _find(runtime, name, request)
        # One hub named twice (by label and by id) is streamed once.
        if all(hub[1] != other[1] for other in found):
            found.append(hub)
    header = request.headers.get("Last-Event-ID")
    try:
        positions = parse_position(header if header is not None else request.args.get("last_event_id"))
    except StreamFormatError as exc:
        raise BadRequest(str(exc)) from None
    hubs: list[tuple[str, str, EventFilter | None, str | None]] = []
    for label, hub_id, verdict in found:
        extra = filters.get(label)
        event_filter = verdict if extra is None else extra if verdict is None else verdict & extra
        hubs.append((label, hub_id, event_filter, positions.get(label)))
    retry = int(config["NOTIFICATIONS_SSE_RETRY"])
    heartbeat = float(config["NOTIFICATIONS_SSE_HEARTBEAT"])
    options = {
        "client": request.remote_addr or "",
        "max_per_client": config["NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT"],
    }
    fd = client_fd(request.environ)
    sock = client_socket(request.environ)
    queue_size = int(config["NOTIFICATIONS_SSE_QUEUE_SIZE"])

    def _open() -> Opened:
        multiplex = Multiplex(retry=retry, heartbeat=heartbeat, queue_size=queue_size, sock=sock)
        multiplex.open(runtime, hubs, **options)
        if fd is not None:
            multiplex.watch_hangup(fd)
        return multiplex.frames(), multiplex.close

    try:
        frames, close = _open()
    except TooManyStreamsError as exc:
        raise TooManyRequests(str(exc), retry_after=max(1, retry // 1000)) from None
    except BackendError as exc:
        logger.warning("Holding a multiplexed stream until the backend answers: %s", exc)
        held = HeldBody(_open, retry=retry, backend_down=lambda: bool(runtime.fanout.stats()["backend_down"]))
        frames, close = iter(held), held.close
    response = Response(frames, status=200, content_type="text/event-stream; charset=utf-8", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.call_on_close(close)
    return response
