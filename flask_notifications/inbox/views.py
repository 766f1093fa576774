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

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, Unauthorized, UnsupportedMediaType

from ..errors import InboxUnavailableError, InvalidInboxRequestError, NotificationNotFoundError
from ..state import current_notifications

if TYPE_CHECKING:
    from .store import Inbox

#: Register it on the application to serve the inbox's JSON API.
inbox_blueprint = Blueprint("notifications_inbox", __name__)

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


def _body_ids(required: bool = True) -> list[Any] | None:
    body = request.get_json(silent=True)
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
