"""The preferences' opt-in JSON blueprint.

::

    from flask_notifications.preferences import preferences_blueprint

    app.register_blueprint(preferences_blueprint, url_prefix="/notifications/preferences")

Every route works on the current user's preferences only, the user the
inbox's :meth:`~flask_notifications.inbox.Inbox.user_loader` (or Flask-Login)
names; POST routes take a JSON body and refuse cross-site requests, by the
inbox blueprint's own checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, Unauthorized, UnsupportedMediaType

from ..errors import InvalidPreferenceError, PreferencesUnavailableError, RequiredPreferenceError
from ..inbox.views import read_body, same_origin
from ..state import current_notifications

if TYPE_CHECKING:
    from .store import Preferences

#: Register it on the application to serve the preferences' JSON API.
preferences_blueprint = Blueprint("notifications_preferences", __name__)


def _preferences() -> Preferences:
    preferences: Preferences = current_notifications.preferences
    return preferences


def _user() -> str:
    user = current_notifications.inbox.current_user_id()
    if user is None:
        raise Unauthorized("Log in to see your notification settings.")
    assert isinstance(user, str)
    return user


@preferences_blueprint.before_request
def _protect() -> None:
    """Refuse cross-site POSTs and bodies that are not JSON, as the inbox does."""
    if request.method != "POST":
        return
    if not same_origin():
        raise Forbidden("Cross-site requests to the notification settings are refused.")
    if not request.is_json:
        raise UnsupportedMediaType("Send the request body as JSON (Content-Type: application/json).")
    g.notifications_preferences_body = read_body()


def _settings(user: str, values: dict[str, dict[str, bool]] | None = None) -> Response:
    preferences = _preferences()
    values = preferences.get(user) if values is None else values
    hubs = {
        hub: {
            "channels": channels,
            "required": [channel for channel in channels if preferences.rule(hub).is_required(channel)],
        }
        for hub, channels in values.items()
    }
    return jsonify(hubs=hubs)


@preferences_blueprint.get("/")
def get_preferences() -> Response:
    """``{"hubs": {hub: {"channels": {channel: enabled}, "required": [channel...]}}}``
    for the current user."""
    return _settings(_user())


@preferences_blueprint.post("/")
def update_preferences() -> Response:
    """Store ``{"hubs": {hub: {channel: true or false}}}``, all or nothing;
    answers what :func:`get_preferences` answers."""
    user = _user()
    body = g.get("notifications_preferences_body")
    choices: Any = body.get("hubs") if isinstance(body, dict) else None
    if not isinstance(choices, dict):
        raise BadRequest('The body is a JSON object such as {"hubs": {"orders": {"email": false}}}.')
    return _settings(user, _preferences().update(user, choices))


@preferences_blueprint.post("/reset")
def reset_preferences() -> Response:
    """Forget the current user's choices, ``{}``, or those of one hub,
    ``{"hub": "orders"}``: the hubs' defaults apply again."""
    user = _user()
    body = g.get("notifications_preferences_body")
    if not isinstance(body, dict) or not isinstance(body.get("hub", ""), str):
        raise BadRequest('The body is a JSON object: {} or {"hub": "orders"}.')
    _preferences().reset(user, body.get("hub") or None)
    return _settings(user)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


@preferences_blueprint.errorhandler(RequiredPreferenceError)
def _required(exc: RequiredPreferenceError) -> tuple[Response, int]:
    return _error(409, str(exc))


@preferences_blueprint.errorhandler(InvalidPreferenceError)
def _bad_request(exc: InvalidPreferenceError) -> tuple[Response, int]:
    return _error(400, str(exc))


@preferences_blueprint.errorhandler(PreferencesUnavailableError)
def _unavailable(exc: PreferencesUnavailableError) -> tuple[Response, int]:
    current_app.logger.warning("%s", exc)
    return _error(503, "The notification settings are unavailable; try again shortly.")


@preferences_blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return _error(exc.code or 500, exc.description or exc.name)
