"""The Flask-Notifications example: the original documentation's simple app,
with a live page.

Two hubs, as in the original example:

* ``UserHub`` takes what ``john`` sends and what is sent to exactly ``tom``
  and ``tim``; it writes each event to a log file and pushes it to the page.
* ``SystemHub`` takes ``system`` events sent from now on; it pushes them to
  the page and, when ``MAIL_SERVER`` is set, mails them.

The page (``/``) follows both hubs with the browser client the extension
ships (``notifications_client_script``: one connection for every hub, shared
by the browser's tabs) and has forms to send a user event and a system event.
Its bell (the shipped ``<notification-bell>``) is the inbox of the user you
view the page as (``/as/tim``; ``tom`` by default): every user event is kept
for its recipients by an ``InboxConsumer`` (SQLite in the instance folder
unless ``FLASK_NOTIFICATIONS_INBOX_URL`` says otherwise), and the bell's
count follows it live, through that user's own badge events of the Inbox
hub, which the stream authorizer filters to them.

Its settings panel shows the viewer's preferences (``/preferences/``): turn
UserHub's ``inbox`` channel off as tom, and tom's bell no longer counts what
is sent to him; SystemHub is required and cannot be turned off.

Run it with ``./examples/run.sh``: with no configuration it uses the embedded
default, the in-process backend with tasks run in the web process, so it
needs no server. With ``REDIS_URL`` set it uses Redis, and a Celery worker
runs the consumers; see ``examples/README.rst``. Any ``FLASK_*`` environment
variable overrides a config key (``FLASK_NOTIFICATIONS_KEY_PREFIX=demo``).
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, redirect, render_template, request, send_from_directory, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.serving import make_server

from flask_notifications import EventFilter, EventHub, InvalidEventError, Notifications, NotificationsError
from flask_notifications.consumers.inbox_consumer import InboxConsumer
from flask_notifications.consumers.log_consumer import LogConsumer
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.event import Event
from flask_notifications.filters.always import Always
from flask_notifications.filters.before_date import BeforeDate
from flask_notifications.filters.not_filter import Not
from flask_notifications.filters.with_event_type import WithEventType
from flask_notifications.filters.with_recipient import WithRecipient
from flask_notifications.filters.with_recipients import WithRecipients
from flask_notifications.filters.with_sender import WithSender
from flask_notifications.inbox import inbox_blueprint
from flask_notifications.preferences import preferences_blueprint

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("celery.app.trace").setLevel(logging.WARNING)

app = Flask(__name__)
app.config.update(
    # The SSE endpoints, GET /notifications/<hub_id>/events and
    # /notifications/events?hub=...&hub=..., and the browser client.
    NOTIFICATIONS_SSE_BLUEPRINT=True,
    EXAMPLE_LOG_FILE=str(Path(__file__).resolve().parent / "events.log"),
    EXAMPLE_MAIL_TO=os.environ.get("EXAMPLE_MAIL_TO", "admin@localhost"),
    # Signs the session cookie that says whom the page is viewed as.
    SECRET_KEY=os.environ.get("SECRET_KEY", "example-only-not-secret"),
    # Consumers honour each user's settings (the panel; see below).
    NOTIFICATIONS_PREFERENCES=True,
)
REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    # The real path: Redis carries the events and the Celery tasks, and a
    # worker (celery -A examples.app:celery worker -P gevent) runs the consumers.
    app.config.update(NOTIFICATIONS_BACKEND="redis", NOTIFICATIONS_REDIS_URL=REDIS_URL, CELERY_BROKER_URL=REDIS_URL)
else:
    # The embedded default: everything in this process, no server needed.
    app.config.update(
        NOTIFICATIONS_BACKEND="memory", CELERY_BROKER_URL="memory://localhost/", CELERY_TASK_ALWAYS_EAGER=True
    )
if os.environ.get("MAIL_SERVER"):
    app.config.update(
        MAIL_SERVER=os.environ["MAIL_SERVER"],
        MAIL_PORT=int(os.environ.get("MAIL_PORT", "25")),
        MAIL_DEFAULT_SENDER=os.environ.get("MAIL_DEFAULT_SENDER", "notifications@localhost"),
    )
# FLASK_SOME_KEY=value in the environment sets SOME_KEY (JSON values parsed).
app.config.from_prefixed_env()

notifications = Notifications(app)
#: The Celery app the worker runs: ``celery -A examples.app:celery worker``.
celery = notifications.get_celery(app)

start = datetime.datetime.now()

user_hub = notifications.create_hub("UserHub")
user_hub.filter_by(WithSender("john") | WithRecipients(["tom", "tim"]))

system_hub = notifications.create_hub("SystemHub")
system_hub.filter_by(WithEventType("system") & Not(BeforeDate(start)))


# The file consumer: one JSON line per event.
user_hub.register_consumer(LogConsumer(app.config["EXAMPLE_LOG_FILE"], name="examples.app.write_to_file"))

# Both hubs push to the page; PushConsumer(None, ...) uses the app's backend.
user_hub.register_consumer(PushConsumer(None, user_hub.hub_id))
system_hub.register_consumer(PushConsumer(None, system_hub.hub_id))

# The inbox: user events are kept for their recipients. The unread counts go
# to a hub of their own, which the bell streams filtered to its user.
inbox_hub = notifications.create_hub("Inbox")
inbox_hub.filter_by(Not(Always()))  # it takes no sent event: it carries the badges only
user_hub.register_consumer(InboxConsumer(badge_channel=inbox_hub.hub_id, name="examples.app.inbox"))
with app.app_context():
    notifications.inbox.create_all()
app.register_blueprint(inbox_blueprint, url_prefix="/inbox")


# Preferences: in the settings panel each viewer turns UserHub's channels
# (its inbox, its stream) on or off; SystemHub is required, so nobody can
# turn it off. The choices are kept beside the inbox.
notifications.preferences.define(system_hub, required=True)
with app.app_context():
    notifications.preferences.create_all()
app.register_blueprint(preferences_blueprint, url_prefix="/preferences")


@notifications.inbox.user_loader
def viewer() -> str:
    """Whom the page is viewed as: a demo has no login."""
    return str(session.get("user", "tom"))


@notifications.stream_authorizer
def authorize(hub: EventHub, req: Any) -> bool | EventFilter:
    """Anyone may read the user and system hubs; of the Inbox hub, each
    viewer reads their own badges only."""
    if hub.label == "Inbox":
        return WithRecipient(viewer())
    return True


# -- "Notify me when the tab is closed": Web Push ----------------------------------
# On when VAPID keys are configured (make a pair with
# 'flask --app examples.app notifications webpush generate-keys', then set
# FLASK_NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY and
# FLASK_NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT); otherwise the page's button says
# why it is off.

#: Where the webpush blueprint (subscribe, the service worker) is mounted.
WEB_PUSH_PREFIX = "/notifications/push"


def setup_web_push() -> str | None:
    """Push every user event to its recipients' subscribed browsers, even
    with no tab of the page open: the webpush blueprint, its table beside the
    inbox, and a WebPushConsumer on UserHub.

    :return: ``None`` when Web Push is on, else why it is off.
    """
    if not app.config.get("NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY"):
        return (
            "Off: this server has no VAPID keys. Make a pair with "
            "'flask --app examples.app notifications webpush generate-keys', then set "
            "FLASK_NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY and FLASK_NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT "
            "to its values and restart."
        )
    try:
        from flask_notifications.consumers.webpush_consumer import WebPushConsumer
        from flask_notifications.webpush import VapidKeys, push_subscriptions, webpush_blueprint
    except ImportError as exc:
        return f"Off: Web Push needs pip install '.[webpush]' ({exc})."
    try:
        VapidKeys.from_config(app.config)
    except NotificationsError as exc:
        return f"Off: {exc}"
    with app.app_context():
        push_subscriptions.create_all()
    app.register_blueprint(webpush_blueprint, url_prefix=WEB_PUSH_PREFIX)
    user_hub.register_consumer(WebPushConsumer(name="examples.app.web_push"))
    return None


#: Why Web Push is off, or ``None``.
WEB_PUSH_OFF = setup_web_push()


@app.context_processor
def web_push_context() -> dict[str, Any]:
    """What templates/web_push.html shows."""
    return {"web_push": {"off": WEB_PUSH_OFF, "prefix": WEB_PUSH_PREFIX}}


# Mail only when an SMTP server is configured: a mail consumer without one
# would fail on every event and fill the dead letters.
if app.config.get("MAIL_SERVER"):
    from flask_notifications.consumers.flaskmail_consumer import FlaskMailConsumer

    system_hub.register_consumer(
        FlaskMailConsumer.from_app(
            app,
            recipients=[app.config["EXAMPLE_MAIL_TO"]],
            subject="[{{ event.event_type }}] {{ event.title }}",
            name="examples.app.mail_system_events",
        )
    )

#: The event types the page listens for (SSE event names are event types).
EVENT_TYPES = ["user", "system"]


@app.get("/")
def index() -> str:
    return render_template(
        "index.html", hubs=[user_hub.label, system_hub.label], event_types=EVENT_TYPES, user=viewer()
    )


@app.get("/as/<user>")
def view_as(user: str) -> ResponseReturnValue:
    """View the page as ``user`` (whose bell it shows)."""
    session["user"] = user[:100]
    return redirect(url_for("index"))


@app.get("/favicon.ico")
def favicon() -> ResponseReturnValue:
    return send_from_directory(app.static_folder or "static", "favicon.svg", mimetype="image/svg+xml")


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


#: The longest value of each form field, as the page's ``maxlength`` says.
MAX_LENGTHS = {"sender": 100, "recipients": 500, "title": 200, "body": 2000}
#: The fields each kind of event takes from its form.
FORM_FIELDS = {"user": ("sender", "recipients", "title", "body"), "system": ("title", "body")}


def _validate(kind: str) -> tuple[dict[str, str], dict[str, str]]:
    """The form's values of ``kind``, and what is wrong with them by field."""
    form = request.form
    values = {name: form.get(name, "").strip() for name in FORM_FIELDS[kind]}
    problems: dict[str, str] = {}
    required = ("sender", "title") if kind == "user" else ("title",)
    for name in required:
        if not values[name]:
            problems[name] = f"{name.capitalize()} is required."
    for name, value in values.items():
        if len(value) > MAX_LENGTHS[name]:
            problems[name] = f"{name.capitalize()} is longer than {MAX_LENGTHS[name]} characters."
    return values, problems


@app.post("/send/<kind>")
def send(kind: str) -> ResponseReturnValue:
    """Send a user or a system event from the page's forms.

    It answers JSON: 202 with the event id and the hubs that took it, 400
    naming every field that is wrong, or 503 with the library's error when
    the broker or the backend cannot be reached (nothing was sent). Without
    ``Accept: application/json`` a sent form comes back to the page.
    """
    if kind not in FORM_FIELDS:
        return jsonify(error=f"Unknown event kind {kind!r}; use 'user' or 'system'."), 404
    values, problems = _validate(kind)
    if problems:
        return jsonify(error=" ".join(problems.values()), fields=problems), 400
    fields: dict[str, Any] = {"sender": "system"}
    if kind == "user":
        fields = {"sender": values["sender"], "recipients": _split(values["recipients"])}
    try:
        event = Event(None, kind, values["title"], values["body"], **fields)
        dispatch = notifications.send(event)
    except InvalidEventError as exc:
        return jsonify(error=str(exc), fields={exc.field: str(exc)} if exc.field else {}), 400
    except NotificationsError as exc:
        # BrokerUnavailableError, BackendError: an outage, not a bad form.
        logging.getLogger("examples.app").warning("Not sent: %s", exc)
        return jsonify(error=str(exc)), 503
    labels = [notifications.get_hub(hub_id).label for hub_id in dispatch.hub_ids]
    if request.accept_mimetypes.best == "application/json":
        return jsonify(event_id=event["event_id"], hubs=labels), 202
    return redirect(url_for("index"))


def main() -> None:
    """Serve the example on 127.0.0.1:$PORT (default 5000), printing the URL
    once the port is bound, or say that the port is taken and exit."""
    port = int(os.environ.get("PORT", "5000"))
    log = logging.getLogger("examples.app")
    try:
        server = make_server("127.0.0.1", port, app, threaded=True)
    except (OSError, SystemExit):
        # Werkzeug says why on stderr and exits when it cannot bind.
        log.error("Cannot listen on 127.0.0.1:%d; choose another port: PORT=8000 ./examples/run.sh", port)
        raise SystemExit(1) from None
    mode = "Redis at " + REDIS_URL if REDIS_URL else "the in-process backend (no server needed)"
    log.info("Running on %s.", mode)
    log.info("Web Push: %s", WEB_PUSH_OFF or "on.")
    print(f"\n  Flask-Notifications example: open http://127.0.0.1:{port}/\n", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
