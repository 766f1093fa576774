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

from flask import Blueprint, Response, g, jsonify
from werkzeug.exceptions import BadRequest

from ..errors import InvalidPreferenceError, PreferencesUnavailableError, RequiredPreferenceError
from ..inbox.json_api import current_user, json_api, json_error
from ..state import current_notifications

if TYPE_CHECKING:
    from .store import Preferences

#: Register it on the application to serve the preferences' JSON API.
preferences_blueprint = Blueprint("notifications_preferences", __name__)
json_api(
    preferences_blueprint,
    cross_site="Cross-site requests to the notification settings are refused.",
    invalid=InvalidPreferenceError,
    unavailable=(PreferencesUnavailableError, "The notification settings are unavailable; try again shortly."),
    body="notifications_preferences_body",
)


def _preferences() -> Preferences:
    preferences: Preferences = current_notifications.preferences
    return preferences


def _user() -> str:
    return current_user("Log in to see your notification settings.")


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


@preferences_blueprint.errorhandler(RequiredPreferenceError)
def _required(exc: RequiredPreferenceError) -> tuple[Response, int]:
    return json_error(409, str(exc))
