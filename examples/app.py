"""A minimal Flask-Notifications application (the full example comes with
the example issue): two hubs from the original documentation, a page to send
events, and the list of what the consumers received."""

from __future__ import annotations

import datetime
import os

from flask import Flask, redirect, request, url_for

from flask_notifications import Notifications
from flask_notifications.event import Event
from flask_notifications.filters.before_date import BeforeDate
from flask_notifications.filters.not_filter import Not
from flask_notifications.filters.with_event_type import WithEventType
from flask_notifications.filters.with_recipients import WithRecipients
from flask_notifications.filters.with_sender import WithSender

app = Flask(__name__)
if os.environ.get("REDIS_URL"):
    app.config.update(REDIS_URL=os.environ["REDIS_URL"], CELERY_BROKER_URL=os.environ["REDIS_URL"])
else:
    app.config.update(NOTIFICATIONS_BACKEND="memory", CELERY_BROKER_URL="memory://", CELERY_TASK_ALWAYS_EAGER=True)

notifications = Notifications(app)
celery = notifications.get_celery(app)
start = datetime.datetime.now()

user_hub = notifications.create_hub("UserHub")
user_hub.filter_by(WithSender("john") | WithRecipients(["tom", "tim"]))
system_hub = notifications.create_hub("SystemHub")
system_hub.filter_by(WithEventType("system") & Not(BeforeDate(start)))

received: list[str] = []


@user_hub.register_consumer(name="example.user_log")
def user_log(event: Event) -> None:
    received.append(f"user hub: {event['title']}")


@system_hub.register_consumer(name="example.system_log")
def system_log(event: Event) -> None:
    received.append(f"system hub: {event['title']}")


@app.get("/")
def index() -> str:
    items = "".join(f"<li>{line}</li>" for line in received[-50:]).replace("<script", "&lt;script")
    return (
        "<h1>Flask-Notifications example</h1>"
        '<form method="post" action="/send"><input name="title" value="Hello">'
        '<button name="kind" value="user">Send user event</button>'
        '<button name="kind" value="system">Send system event</button></form>'
        f"<ul>{items}</ul>"
    )


@app.post("/send")
def send() -> object:
    title = request.form.get("title", "Hello")
    if request.form.get("kind") == "system":
        event = Event(None, "system", title, "A system event", sender="system")
    else:
        event = Event(None, "user", title, "A user event", sender="john", recipients=["tom", "tim"])
    notifications.send(event)
    return redirect(url_for("index"))


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    print(f"Open http://127.0.0.1:{port}/", flush=True)
    app.run(host="127.0.0.1", port=port, threaded=True)
