"""The HTTP side of the streams: the ``text/event-stream`` response, and the
opt-in blueprint that serves ``GET <prefix>/<hub>/events``, where ``<hub>``
is a hub's id (``event-hub-<label>``) or its label, ``GET
<prefix>/events?hub=a&hub=b`` (several hubs on one connection, see
:mod:`~flask_notifications.streaming.multiplex`), and the browser client
(``<prefix>/static/notifications.js``, see :mod:`~flask_notifications.streaming.client`)."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    InternalServerError,
    NotFound,
    TooManyRequests,
)

from .. import signals
from ..errors import BackendError, HubError, StreamFormatError, TooManyStreamsError
from ..event_filter import EventFilter
from ..event_hub import HUB_ID_PREFIX, EventHub
from ..state import runtime as current_runtime
from .client import client_scope, client_script, client_url
from .green import ENVIRON_KEY, SocketWriter, under_gevent
from .held import HeldBody, Opened
from .multiplex import multiplexed_response
from .server import ADVICE, client_fd, client_socket, log_once, refusal
from .wire import parse_last_event_id

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from ..state import Runtime
    from .stream import Stream

logger = logging.getLogger(__name__)

#: The blueprint registered when ``NOTIFICATIONS_SSE_BLUEPRINT`` is true.
blueprint = Blueprint(
    "notifications", __name__, static_folder="static", static_url_path="/static", template_folder="templates"
)
blueprint.add_app_template_global(client_script, "notifications_client_script")
blueprint.add_app_template_global(client_url, "notifications_client_url")
blueprint.add_app_template_global(client_scope, "notifications_client_scope")

_warned_unpatched = False
#: The runtimes whose open streams were already warned about.
_warned_public: weakref.WeakSet[Runtime] = weakref.WeakSet()


@blueprint.route("/<hub_id>/events")
def events(hub_id: str) -> Response:
    """Stream the events of hub ``hub_id`` (its id or its label), through
    the application's :meth:`~flask_notifications.Notifications.stream_authorizer`."""
    runtime = current_runtime()
    if not runtime.has_authorizer and not current_app.config["NOTIFICATIONS_SSE_PUBLIC"]:
        _warn_public(runtime)
    return stream_response(runtime, hub_id)


@blueprint.route("/events")
def multiplexed_events() -> Response:
    """Stream the events of every hub named by a ``hub`` query parameter
    (``?hub=a&hub=b``) on one connection, each hub through the
    :meth:`~flask_notifications.Notifications.stream_authorizer`."""
    runtime = current_runtime()
    if not runtime.has_authorizer and not current_app.config["NOTIFICATIONS_SSE_PUBLIC"]:
        _warn_public(runtime)
    return multiplexed_response(runtime, request.args.getlist("hub"))


@blueprint.route("/events/scope")
def scope() -> Response:
    """The scope of this request's user (:func:`~flask_notifications.streaming.client.client_scope`):
    a client that was given none asks for it before it shares a connection."""
    response = jsonify(scope=client_scope())
    response.headers["Cache-Control"] = "no-store"
    response.vary.add("Cookie")
    return response


@blueprint.errorhandler(HTTPException)
def _answer_in_kind(error: HTTPException) -> Any:
    """A client that asks for JSON gets its refusal as JSON, with the same
    status and headers."""
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) != "application/json":
        return error
    response = jsonify(error=error.name, status=error.code, message=error.description)
    response.status_code = error.code or 500
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _warn_public(runtime: Runtime) -> None:
    if runtime in _warned_public:
        return
    _warned_public.add(runtime)
    logger.warning(
        "The notifications blueprint serves every hub's stream to anyone: no stream_authorizer is "
        "registered. Register one (see docs/security.rst), or set NOTIFICATIONS_SSE_PUBLIC = True "
        "if the streams are public on purpose."
    )


def _socket_writer(environ: dict[str, Any]) -> SocketWriter | None:
    # Offered by a server that hands the connection over (the gunicorn
    # worker class of flask_notifications.gunicorn).
    writer = environ.get(ENVIRON_KEY)
    return writer if isinstance(writer, SocketWriter) else None


def _warn_if_gevent_unpatched() -> None:
    global _warned_unpatched
    if _warned_unpatched or under_gevent():
        return
    try:
        import gevent
    except ImportError:  # pragma: no cover - gevent is optional
        return
    if isinstance(gevent.getcurrent(), gevent.Greenlet):
        _warned_unpatched = True
        logger.warning(
            "An event stream is served by gevent, but the process is not monkey-patched: every stream "
            "blocks the whole server. Call gevent.monkey.patch_all() first thing, or use gunicorn -k gevent."
        )


def _refuse_if_it_would_freeze() -> None:
    """``500`` with a JSON body naming the worker class to use, on a server
    that one open stream would freeze (see :mod:`.server`)."""
    reason = refusal(request.environ)
    if reason is None:
        return
    log_once(reason)
    message = f"This server cannot hold an event stream open: {reason}. {ADVICE}"
    body = jsonify(error="Internal Server Error", status=500, message=message)
    body.status_code = 500
    raise InternalServerError(message, response=body)


def _find_hub(runtime: Runtime, name: str) -> tuple[EventHub, bool]:
    """The hub named ``name`` (its id or its label), and whether it exists.
    An unknown name gets a hub of that label that is not registered, for the
    authorizer to judge as it would judge a real one.

    :raises NotFound: ``name`` cannot be the id or label of any hub.
    """
    hubs = runtime.extension.hubs
    for hub_id in (name, HUB_ID_PREFIX + name):
        if hub_id in hubs:
            return hubs[hub_id], True
    label = name.removeprefix(HUB_ID_PREFIX)
    try:
        return EventHub(label), False
    except HubError:
        raise NotFound(f"There is no hub {name!r}.") from None


def _authorize(runtime: Runtime, hub: EventHub) -> EventFilter | None:
    verdict = runtime.authorize(hub, request)
    if verdict is False:
        raise Forbidden(f"You may not read the events of hub {hub.hub_id!r}.")
    return None if verdict is True else verdict


class _Body:
    """The response body of a stream: its frames, and a ``close`` that
    ends the stream even when the server never started the frames."""

    __slots__ = ("_stream", "_frames")

    def __init__(self, stream: Stream, frames: Generator[bytes, None, None]) -> None:
        self._stream = stream
        self._frames = frames

    def __iter__(self) -> Iterator[bytes]:
        return self._frames

    def close(self) -> None:
        self._frames.close()
        self._stream.response_closed()


def stream_response(runtime: Runtime, hub_id: str, event_filter: EventFilter | None = None) -> Response:
    """Answer the current request with the event stream of ``hub_id``.

    The checks run before any byte is streamed, in this order:

    - the :meth:`~flask_notifications.Notifications.stream_authorizer`
      returning ``False`` is ``403 Forbidden``, whether the hub exists or
      not, so the answers tell a client that may not read a hub nothing
      about which hubs exist; returning an :class:`EventFilter` narrows the
      stream further, with ``&``;
    - an unknown hub id (or label) is ``404 Not Found``;
    - a ``Last-Event-ID`` header (or, when there is none, a ``last_event_id``
      query parameter) that is not an id of this stream is
      ``400 Bad Request``: it is not silently ignored, because a client
      resuming from a corrupted id would otherwise lose events unawares. An
      empty value means no id. An id newer than any of the hub's gets a
      ``gap`` event and the stream starts from the newest;
    - a client address with ``NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT``
      open streams in this process is ``429 Too Many Requests``, with
      ``Retry-After``.

    A backend that cannot be read (down, or failing over) is no refusal: a
    browser's ``EventSource`` would give up for good on a ``503``. The
    stream answers ``200`` with ``retry:`` and ``backend-down``, and is held
    open until the backend answers (see
    :class:`~flask_notifications.streaming.held.HeldBody`). A client that
    sends ``Accept: application/json`` to the blueprint gets the refusals as
    JSON: ``{"error": ..., "status": ..., "message": ...}``. Each refusal
    sends :data:`~flask_notifications.signals.stream_refused`.

    While the process stops (:meth:`~flask_notifications.streaming.fanout.Fanout.end_streams`),
    a stream answers with nothing but the ``reconnect`` event, so the client
    resumes on another process.
    """
    try:
        return _stream_response(runtime, hub_id, event_filter)
    except HTTPException as exc:
        signals.stream_refused.send(runtime.app, hub_id=hub_id, status=exc.code)
        raise


def _stream_response(runtime: Runtime, hub_id: str, event_filter: EventFilter | None) -> Response:
    config = current_app.config
    hub, exists = _find_hub(runtime, hub_id)
    authorized = _authorize(runtime, hub)
    if not exists:
        raise NotFound(f"There is no hub {hub_id!r}.")
    if authorized is not None:
        event_filter = authorized if event_filter is None else event_filter & authorized
    header = request.headers.get("Last-Event-ID")
    try:
        last_event_id = parse_last_event_id(header if header is not None else request.args.get("last_event_id"))
    except StreamFormatError as exc:
        raise BadRequest(str(exc)) from None
    _warn_if_gevent_unpatched()
    _refuse_if_it_would_freeze()
    retry_ms = int(config["NOTIFICATIONS_SSE_RETRY"])
    heartbeat = float(config["NOTIFICATIONS_SSE_HEARTBEAT"])
    sock = client_socket(request.environ)
    fd = client_fd(request.environ)
    writer = _socket_writer(request.environ) if config["NOTIFICATIONS_SSE_DIRECT_WRITE"] else None
    options = {
        "event_filter": event_filter,
        "last_event_id": last_event_id,
        "client": request.remote_addr or "",
        "max_per_client": config["NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT"],
        "queue_size": config["NOTIFICATIONS_SSE_QUEUE_SIZE"],
        "sock": sock,
        "writer": writer,
    }

    def _opened(stream: Stream) -> _Body:
        if fd is not None:
            stream.watch_hangup(fd)
        return _Body(stream, stream.frames(retry=retry_ms, heartbeat=heartbeat))

    def _open() -> Opened:
        stream = runtime.fanout.open(hub.hub_id, **options)
        return iter(_opened(stream)), stream.response_closed

    try:
        stream = runtime.fanout.open(hub.hub_id, **options)
    except TooManyStreamsError as exc:
        raise TooManyRequests(str(exc), retry_after=max(1, retry_ms // 1000)) from None
    except BackendError as exc:
        logger.warning("Holding a stream of hub %r until the backend answers: %s", hub.hub_id, exc)
        return _held_response(runtime, _open, retry_ms)
    return _event_stream(_opened(stream), stream.response_closed)


def _held_response(runtime: Runtime, opener: Callable[[], Opened], retry_ms: int) -> Response:
    """A ``200`` that holds a stream the backend could not open yet."""
    body = HeldBody(opener, retry=retry_ms, backend_down=lambda: bool(runtime.fanout.stats()["backend_down"]))
    return _event_stream(body, body.close)


def _event_stream(body: Any, on_close: Callable[[], None]) -> Response:
    response = Response(
        body,
        status=200,
        content_type="text/event-stream; charset=utf-8",
        # The server iterates the frames itself, without werkzeug's
        # wrappers: one generator less for every parked stream to hold.
        direct_passthrough=True,
    )
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.call_on_close(on_close)
    return response
