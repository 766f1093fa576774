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

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import BadRequest

from ..errors import InboxUnavailableError, InvalidInboxRequestError, NotificationNotFoundError
from ..state import current_notifications
from .json_api import MAX_BODY_DEPTH, MAX_BODY_SIZE, current_user, json_api, json_error, read_body, same_origin

if TYPE_CHECKING:
    from .store import Inbox

# The shared rules lived here first: their names stay importable from here.
__all__ = ["MAX_BODY_DEPTH", "MAX_BODY_SIZE", "inbox_blueprint", "read_body", "same_origin"]

#: Register it on the application to serve the inbox's JSON API.
inbox_blueprint = Blueprint("notifications_inbox", __name__)

json_api(
    inbox_blueprint,
    cross_site="Cross-site requests to the inbox are refused.",
    invalid=InvalidInboxRequestError,
    unavailable=(InboxUnavailableError, "The notification inbox is unavailable; try again shortly."),
    body="notifications_inbox_body",
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _inbox() -> Inbox:
    inbox: Inbox = current_notifications.inbox
    return inbox


def _user() -> str:
    return current_user("Log in to see your notifications.")


def _flag(name: str) -> bool:
    value = request.args.get(name, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"The query parameter {name!r} is a boolean (1 or 0), not {value[:20]!r}.")


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


@inbox_blueprint.errorhandler(NotificationNotFoundError)
def _not_found(exc: NotificationNotFoundError) -> tuple[Response, int]:
    return json_error(404, str(exc), ids=exc.ids)
