"""The opt-in blueprint through which browsers subscribe to Web Push.

::

    from flask_notifications.webpush import webpush_blueprint

    app.register_blueprint(webpush_blueprint, url_prefix="/notifications/push")

It follows the inbox blueprint's rules: every route but the public key and
the service worker works on the current user's subscriptions only, found
by the inbox's :meth:`~flask_notifications.inbox.Inbox.user_loader` (or
Flask-Login), and POST routes take a JSON body and refuse cross-site
requests.
"""

from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from ..errors import ConfigurationError, InboxUnavailableError, InvalidPushSubscriptionError
from ..inbox.json_api import current_user, json_api, json_error
from .subscriptions import push_subscriptions
from .vapid import VapidKeys

#: Register it on the application to let browsers subscribe.
webpush_blueprint = Blueprint("notifications_webpush", __name__)
json_api(
    webpush_blueprint,
    cross_site="Cross-site requests to the push subscriptions are refused.",
    invalid=InvalidPushSubscriptionError,
    unavailable=(InboxUnavailableError, "Push subscriptions are unavailable; try again shortly."),
)

#: The service worker's file, shipped with the browser client.
SERVICE_WORKER = "notifications-sw.js"


def _user() -> str:
    return current_user("Log in to manage your push subscriptions.")


@webpush_blueprint.get("/vapid-public-key")
def vapid_public_key() -> Response:
    """The ``applicationServerKey`` browsers subscribe with."""
    try:
        keys = VapidKeys.from_config(current_app.config)
    except ConfigurationError as exc:
        current_app.logger.error("%s", exc)
        return json_error(503, "Web Push is not configured on this server.")[0]
    return jsonify(public_key=keys.public_text)


@webpush_blueprint.get("/" + SERVICE_WORKER)
def service_worker() -> Response:
    """The shipped service worker, allowed to control every page of the
    site (register it with ``{scope: "/"}``)."""
    script = files("flask_notifications.streaming").joinpath("static", SERVICE_WORKER).read_bytes()
    response = Response(script, mimetype="text/javascript")
    response.headers["Service-Worker-Allowed"] = "/"
    response.headers["Cache-Control"] = "no-cache"
    return response


@webpush_blueprint.get("/")
def list_subscriptions() -> Response:
    """The current user's subscriptions (their ids and endpoints, no keys)."""
    user = _user()
    found = push_subscriptions.of_users([user])
    return jsonify(subscriptions=[subscription.to_dict() for subscription in found])


@webpush_blueprint.post("/subscribe")
def subscribe() -> tuple[Response, int]:
    """Store the body, what ``PushManager.subscribe()`` returned
    (``subscription.toJSON()``), as one of the user's devices."""
    user = _user()
    stored = push_subscriptions.subscribe(user, request.get_json(silent=True))
    return jsonify(stored.to_dict()), 201


@webpush_blueprint.post("/unsubscribe")
def unsubscribe() -> Response:
    """Delete the user's subscription ``{"endpoint": ...}``."""
    user = _user()
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("endpoint"), str):
        raise BadRequest('The body is {"endpoint": "<the subscription\'s endpoint>"}.')
    return jsonify(unsubscribed=push_subscriptions.unsubscribe(user, body["endpoint"]))
