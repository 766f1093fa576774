"""The application the service worker's browser test serves under gunicorn::

    gunicorn "tests.browser.webpush_app:create_app()"

Its config comes as JSON in ``WEBPUSH_APP_CONFIG``. It has the webpush
blueprint at ``/push``, a page at ``/`` and ``/login/<user>``, which sets
the session's user: the inbox's user loader reads it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, redirect, session

from flask_notifications import Notifications
from flask_notifications.consumers.webpush_consumer import WebPushConsumer
from flask_notifications.webpush import push_subscriptions, webpush_blueprint

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Web Push test</title>
<link rel="icon" href="data:,"></head>
<body><h1>Web Push test page</h1><p>Pushes open <a href="/posts/7">/posts/7</a>.</p></body></html>
"""


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask("webpush_app")
    app.config.update(
        SECRET_KEY="webpush-browser-test",
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://localhost/",
        CELERY_TASK_ALWAYS_EAGER=True,
    )
    app.config.update(config if config is not None else json.loads(os.environ["WEBPUSH_APP_CONFIG"]))
    notifications = Notifications(app)
    notifications.create_hub("push").register_consumer(WebPushConsumer())

    @notifications.inbox.user_loader
    def user() -> str | None:
        found = session.get("user")
        return str(found) if found else None

    with app.app_context():
        push_subscriptions.create_all()
    app.register_blueprint(webpush_blueprint, url_prefix="/push")

    @app.get("/")
    def index() -> str:
        return PAGE

    @app.get("/posts/<int:number>")
    def post(number: int) -> str:
        return PAGE.replace("Web Push test page", f"Post {number}")

    @app.get("/login/<user>")
    def login(user: str) -> Any:
        session["user"] = user
        return redirect("/")

    return app
