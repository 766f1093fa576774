"""The HTTP side of the streams: the ``text/event-stream`` response, and the
opt-in blueprint that serves ``GET <prefix>/<hub_id>/events``."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import BadRequest, Forbidden, NotFound, ServiceUnavailable, TooManyRequests

from .errors import BackendError, HubError, StreamFormatError, TooManyStreamsError
from .event_filter import EventFilter
from .event_hub import EventHub
from .sse import parse_last_event_id, under_gevent

if TYPE_CHECKING:
    from .ext import Notifications

logger = logging.getLogger(__name__)

#: The blueprint registered when ``NOTIFICATIONS_SSE_BLUEPRINT`` is true.
blueprint = Blueprint("notifications", __name__)

_warned_unpatched = False


@blueprint.route("/<hub_id>/events")
def events(hub_id: str) -> Response:
    """Stream the events of hub ``hub_id``, through the application's
    :meth:`~flask_notifications.Notifications.stream_authorizer`."""
    ext: Notifications = current_app.extensions["notifications"]
    return ext.flask_sse_notifier(hub_id)


def _client_socket(environ: dict[str, Any]) -> socket.socket | None:
    # werkzeug's development server and gunicorn expose the connection, which
    # lets an evicted stream end at once; gevent.pywsgi does not.
    for key in ("werkzeug.socket", "gunicorn.socket"):
        found = environ.get(key)
        if isinstance(found, socket.socket):
            return found
    return None


def _client_fd(environ: dict[str, Any], sock: socket.socket | None) -> int | None:
    if sock is not None:
        return sock.fileno()
    try:
        # gevent.pywsgi reads the request through a file made from the socket.
        return int(environ["wsgi.input"].rfile.fileno())
    except (AttributeError, KeyError, OSError, TypeError, ValueError):
        return None


def _warn_if_gevent_unpatched() -> None:
    global _warned_unpatched
    if _warned_unpatched or under_gevent():
        return
    try:
        import gevent
    except ImportError:  # pragma: no cover - gevent is a dependency
        return
    if isinstance(gevent.getcurrent(), gevent.Greenlet):
        _warned_unpatched = True
        logger.warning(
            "An event stream is served by gevent, but the process is not monkey-patched: every stream "
            "blocks the whole server. Call gevent.monkey.patch_all() first thing, or use gunicorn -k gevent."
        )


def _authorize(ext: Notifications, hub: EventHub) -> EventFilter | None:
    authorizer = ext._stream_authorizer
    if authorizer is None:
        return None
    verdict = authorizer(hub, request)
    if verdict is False:
        raise Forbidden(f"You may not read the events of hub {hub.hub_id!r}.")
    if verdict is True or verdict is None:
        return None
    if isinstance(verdict, EventFilter):
        return verdict
    raise TypeError(
        f"A stream authorizer must return True, False, None or an EventFilter, not {type(verdict).__name__}."
    )


def stream_response(ext: Notifications, hub_id: str, event_filter: EventFilter | None = None) -> Response:
    """Answer the current request with the event stream of ``hub_id``.

    The checks run before any byte is streamed, in this order:

    - an unknown hub id is ``404 Not Found``;
    - the :meth:`~flask_notifications.Notifications.stream_authorizer`
      returning ``False`` is ``403 Forbidden``; returning an
      :class:`EventFilter` narrows the stream further, with ``&``;
    - a ``Last-Event-ID`` header (or, when there is none, a ``last_event_id``
      query parameter) that is not an id of this stream is
      ``400 Bad Request``: it is not silently ignored, because a client
      resuming from a corrupted id would otherwise lose events unawares. An
      empty value means no id;
    - a client address with ``NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT``
      open streams in this process is ``429 Too Many Requests``;
    - a backend that cannot be read is ``503 Service Unavailable``.

    Both error answers that may pass carry ``Retry-After``.
    """
    app = current_app
    config = app.config
    try:
        hub = ext.get_hub(hub_id)
    except HubError:
        raise NotFound(f"There is no hub {hub_id!r}.") from None
    authorized = _authorize(ext, hub)
    if authorized is not None:
        event_filter = authorized if event_filter is None else event_filter & authorized
    header = request.headers.get("Last-Event-ID")
    try:
        last_event_id = parse_last_event_id(header if header is not None else request.args.get("last_event_id"))
    except StreamFormatError as exc:
        raise BadRequest(str(exc)) from None
    _warn_if_gevent_unpatched()
    retry_ms = int(config["NOTIFICATIONS_SSE_RETRY"])
    fanout = ext._get_fanout(app._get_current_object())  # type: ignore[attr-defined]
    sock = _client_socket(request.environ)
    try:
        connection = fanout.open(
            hub.hub_id,
            event_filter=event_filter,
            last_event_id=last_event_id,
            client=request.remote_addr or "",
            max_per_client=config["NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT"],
            queue_size=config["NOTIFICATIONS_SSE_QUEUE_SIZE"],
            sock=sock,
        )
    except TooManyStreamsError as exc:
        raise TooManyRequests(str(exc), retry_after=max(1, retry_ms // 1000)) from None
    except BackendError as exc:
        logger.warning("Refused a stream of hub %r: %s", hub.hub_id, exc)
        raise ServiceUnavailable(
            "The notifications backend cannot be reached; try again shortly.", retry_after=max(1, retry_ms // 1000)
        ) from None
    fd = _client_fd(request.environ, sock)
    if fd is not None:
        connection.watch_hangup(fd)
    response = Response(
        connection.frames(retry=retry_ms, heartbeat=float(config["NOTIFICATIONS_SSE_HEARTBEAT"])),
        status=200,
        content_type="text/event-stream; charset=utf-8",
    )
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.call_on_close(connection.close)
    return response
