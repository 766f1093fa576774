"""The application the SSE tests serve: in a subprocess under gevent.pywsgi
(``python -m tests.apps.serve_sse``) or ``gunicorn -k gevent``, or in a
thread of the test process under the Flask development server.

Its configuration comes as JSON in ``SSE_APP_CONFIG`` (or as a dict), so the
test process builds the same hubs and consumers on the same Redis keys and
Celery queue, and a Celery worker there feeds the streams served here.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

import redis
from flask import Flask, abort, jsonify, request, session

from flask_notifications import EventFilter, EventHub, Notifications
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.filters.with_recipient import WithRecipient
from flask_notifications.filters.with_tag import WithTag


def configure(config: dict[str, Any]) -> Flask:
    """A Flask app with ``config``, before the extension is set up."""
    app = Flask("sse_app")
    app.config.update(config)
    app.config.setdefault("SECRET_KEY", "sse-tests")
    app.config.setdefault("NOTIFICATIONS_SSE_BLUEPRINT", True)
    return app


#: Holds back every event the ``/gated`` stream's filter is asked about
#: until ``POST /gate/open``: a stream filter that waits (on a database, say).
gate = threading.Event()


class Gated(EventFilter):
    """A filter that waits for :data:`gate`, then lets everything through."""

    def filter(self, event: Any) -> bool:
        gate.wait(60)
        return True


def setup(app: Flask, notifications: Notifications) -> None:
    """Hubs, consumers, the stream authorizer and the test routes.

    ``SSE_TEST_NO_AUTHORIZER`` leaves the streams without an authorizer;
    ``SSE_TEST_LOGIN_REQUIRED`` makes the authorizer refuse every stream of a
    client that is not logged in; ``SSE_TEST_EXTRA_HUBS`` lists more public
    hubs."""
    for label in ("news", "private", "closed", *app.config.get("SSE_TEST_EXTRA_HUBS", ())):
        hub = notifications.create_hub(label)
        if not hub.consumers:
            hub.register_consumer(PushConsumer(None, hub.hub_id))
    private = notifications.create_hub("private")
    news = notifications.create_hub("news")

    def authorize(hub: EventHub, req: Any) -> bool | EventFilter:
        if app.config.get("SSE_TEST_LOGIN_REQUIRED") and not session.get("user"):
            return False
        if hub.label == "closed":
            return False
        if hub.label == "private":
            user = session.get("user")
            return WithRecipient(user) if user else False
        return True

    if not app.config.get("SSE_TEST_NO_AUTHORIZER"):
        notifications.stream_authorizer(authorize)

    @app.before_request
    def shrink_send_buffer() -> None:
        # gunicorn makes its own listener: shrink each connection's buffer.
        sndbuf = app.config.get("SSE_TEST_SNDBUF")
        sock = request.environ.get("gunicorn.socket")
        if sndbuf and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)

    @app.get("/gated")
    def gated() -> Any:
        return notifications.flask_sse_notifier(news.hub_id, event_filter=Gated())

    @app.post("/gate/open")
    def open_gate() -> Any:
        gate.set()
        return jsonify(open=True)

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        session["user"] = user
        return jsonify(user=user)

    @app.post("/publish/<hub_id>")
    def publish(hub_id: str) -> Any:
        message = notifications.backend.publish(hub_id, request.get_data(as_text=True))
        return jsonify(id=message.id)

    @app.get("/greenlets")
    def greenlets() -> Any:
        import gc

        from greenlet import greenlet

        return jsonify(count=sum(1 for item in gc.get_objects() if isinstance(item, greenlet)))

    @app.get("/stats")
    def stats() -> Any:
        return jsonify(notifications.stream_stats())

    @app.get("/tagged/<tag>")
    def tagged(tag: str) -> Any:
        return notifications.flask_sse_notifier(news.hub_id, event_filter=WithTag(tag))

    @app.get("/mine")
    def mine() -> Any:
        user = session.get("user") or abort(401)
        return notifications.flask_sse_notifier(private.hub_id, event_filter=WithRecipient(user))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The whole application, configured from ``config`` or ``SSE_APP_CONFIG``.

    ``SSE_TEST_CLIENT_NAME`` in the config names the Redis connections of the
    backend (``CLIENT SETNAME``), so a test can count them.
    """
    if config is None:
        config = json.loads(os.environ["SSE_APP_CONFIG"])
    app = configure(config)
    broker = None
    name = config.get("SSE_TEST_CLIENT_NAME")
    if name and config.get("NOTIFICATIONS_BACKEND") == "redis":
        broker = redis.Redis.from_url(config["NOTIFICATIONS_REDIS_URL"], client_name=name)
    notifications = Notifications()
    notifications.init_app(app, broker=broker)
    setup(app, notifications)
    return app
