"""The inbox's opt-in JSON blueprint.

::

    from flask_notifications.inbox import inbox_blueprint

    app.register_blueprint(inbox_blueprint, url_prefix="/notifications/inbox")

Every route works on the current user's inbox only, found by the
:meth:`Inbox.user_loader` (or Flask-Login). POST routes take a JSON body and
refuse cross-site requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    RequestEntityTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)

from ..errors import InboxUnavailableError, InvalidInboxRequestError, NotificationNotFoundError
from ..state import current_notifications

if TYPE_CHECKING:
    from .store import Inbox

#: Register it on the application to serve the inbox's JSON API.
inbox_blueprint = Blueprint("notifications_inbox", __name__)

#: Largest body a POST may have, in bytes: 1,000 ids take about 20 KiB.
MAX_BODY_SIZE = 64 * 1024
#: Deepest nesting of lists and objects a body may have; ``{"ids": [1]}`` has 2.
MAX_BODY_DEPTH = 16

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _inbox() -> Inbox:
    inbox: Inbox = current_notifications.inbox
    return inbox


def _user() -> str:
    user = _inbox().current_user_id()
    if user is None:
        raise Unauthorized("Log in to see your notifications.")
    return user


def _flag(name: str) -> bool:
    value = request.args.get(name, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"The query parameter {name!r} is a boolean (1 or 0), not {value[:20]!r}.")


def same_origin() -> bool:
    """Whether the request comes from the application's own pages (its
    ``Sec-Fetch-Site`` and ``Origin`` headers, when sent, say so)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == request.host_url.rstrip("/")


@inbox_blueprint.before_request
def _protect() -> None:
    """Refuse cross-site POSTs. A cross-site form cannot send JSON, and a
    cross-site ``fetch`` with JSON needs a CORS preflight this blueprint never
    answers; the ``Origin`` and ``Sec-Fetch-Site`` headers are checked too."""
    if request.method != "POST":
        return
    if not same_origin():
        raise Forbidden("Cross-site requests to the inbox are refused.")
    if not request.is_json:
        raise UnsupportedMediaType("Send the request body as JSON (Content-Type: application/json).")
    g.notifications_inbox_body = read_body()


def read_body() -> Any:
    """The POST's JSON body; an empty body is ``{}``. The preferences'
    blueprint reads its bodies with it too.

    :raises RequestEntityTooLarge: it is larger than :data:`MAX_BODY_SIZE`.
    :raises BadRequest: it is not JSON, or nested too deep to parse.
    """
    too_large = RequestEntityTooLarge(f"The body is larger than {MAX_BODY_SIZE // 1024} KiB.")
    if request.content_length is not None and request.content_length > MAX_BODY_SIZE:
        raise too_large
    request.max_content_length = MAX_BODY_SIZE
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large from None
    if len(data) > MAX_BODY_SIZE:  # read before this limit was set
        raise too_large
    if not data.strip():
        return {}
    try:
        body = current_app.json.loads(data)
    except (ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's stack.
        raise BadRequest("The body is not valid JSON.") from None
    if _too_deep(body, MAX_BODY_DEPTH):
        raise BadRequest(f"The body is nested deeper than {MAX_BODY_DEPTH} levels.")
    return body


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects deeper than ``limit``
    (without recursion, so that no depth overflows the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _body_ids(required: bool = True) -> list[Any] | None:
    body = g.get("notifications_inbox_body")
    if not isinstance(body, dict):
        raise BadRequest('The body is a JSON object, such as {"ids": [1, 2]}.')
    ids = body.get("ids")
    if ids is None and not required:
        return None
    if not isinstance(ids, list):
        raise BadRequest('Give the notification ids as a JSON list: {"ids": [1, 2]}.')
    return ids


def _changed(user: str, count: int) -> Response:
    return jsonify(changed=count, unread_count=_inbox().unread_count(user))


@inbox_blueprint.get("/")
def list_notifications() -> Response:
    """The user's notifications, newest first: ``?unread_only=1``,
    ``?archived=1``, ``?before=<next_cursor>``, ``?limit=20`` (1 to 100)."""
    user = _user()
    limit_text = request.args.get("limit", "20")
    if not (limit_text.isascii() and limit_text.isdigit()) or len(limit_text) > 4:
        raise BadRequest(f"The limit is an integer from 1 to 100, not {limit_text[:20]!r}.")
    inbox = _inbox()
    page = inbox.list(
        user,
        unread_only=_flag("unread_only"),
        archived=_flag("archived"),
        before=request.args.get("before"),
        limit=int(limit_text),
    )
    return jsonify(**page.to_dict(), unread_count=inbox.unread_count(user))


@inbox_blueprint.get("/count")
def count() -> Response:
    """The user's unread and unseen counts."""
    user = _user()
    inbox = _inbox()
    return jsonify(unread_count=inbox.unread_count(user), unseen_count=inbox.unseen_count(user))


@inbox_blueprint.post("/read")
def mark_read() -> Response:
    """Mark ``{"ids": [...]}`` read."""
    user = _user()
    return _changed(user, _inbox().mark_read(user, _body_ids() or []))


@inbox_blueprint.post("/unread")
def mark_unread() -> Response:
    """Mark ``{"ids": [...]}`` unread."""
    user = _user()
    return _changed(user, _inbox().mark_unread(user, _body_ids() or []))


@inbox_blueprint.post("/read-all")
def mark_all_read() -> Response:
    """Mark all the user's notifications read."""
    user = _user()
    if not isinstance(g.get("notifications_inbox_body"), dict):
        raise BadRequest("The body is a JSON object: {}.")
    return _changed(user, _inbox().mark_all_read(user))


@inbox_blueprint.post("/seen")
def mark_seen() -> Response:
    """Mark ``{"ids": [...]}`` seen, or all of them with ``{}``."""
    user = _user()
    return _changed(user, _inbox().mark_seen(user, _body_ids(required=False)))


@inbox_blueprint.post("/archive")
def archive() -> Response:
    """Archive ``{"ids": [...]}``."""
    user = _user()
    return _changed(user, _inbox().archive(user, _body_ids() or []))


@inbox_blueprint.post("/unarchive")
def unarchive() -> Response:
    """Bring ``{"ids": [...]}`` back from the archive."""
    user = _user()
    return _changed(user, _inbox().unarchive(user, _body_ids() or []))


@inbox_blueprint.post("/delete")
def delete() -> Response:
    """Delete ``{"ids": [...]}`` for good."""
    user = _user()
    return _changed(user, _inbox().delete(user, _body_ids() or []))


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify(error=message, **extra), status


@inbox_blueprint.errorhandler(InvalidInboxRequestError)
def _bad_request(exc: InvalidInboxRequestError) -> tuple[Response, int]:
    return _error(400, str(exc))


@inbox_blueprint.errorhandler(NotificationNotFoundError)
def _not_found(exc: NotificationNotFoundError) -> tuple[Response, int]:
    return _error(404, str(exc), ids=exc.ids)


@inbox_blueprint.errorhandler(InboxUnavailableError)
def _unavailable(exc: InboxUnavailableError) -> tuple[Response, int]:
    current_app.logger.warning("%s", exc)
    return _error(503, "The notification inbox is unavailable; try again shortly.")


@inbox_blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return _error(exc.code or 500, exc.description or exc.name)
