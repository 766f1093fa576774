"""The live badge end to end: a served app, a real worker, and each user's
event stream filtered by ``WithRecipient``. Every change of a user's inbox
(stored by the worker, read from another tab) reaches all of that user's
streams with the new unread count, and no one else's."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort, session
from werkzeug.serving import make_server

from flask_notifications import Event, Notifications
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.filters.with_recipient import WithRecipient
from flask_notifications.inbox import BADGE_EVENT_TYPE, Inbox, inbox_blueprint
from flask_notifications.inbox.consumer import InboxConsumer
from tests.helpers import WorkerFactory, free_port
from tests.helpers.sse_client import SSEClient, SSEEvent

pytestmark = [pytest.mark.redis]


@pytest.fixture
def served(app: Flask, notifications: Notifications, inbox: Inbox) -> Iterator[str]:
    """The app, with an inbox hub and per-user streams, served in a thread."""
    app.config["SECRET_KEY"] = "badge-tests"
    hub = notifications.create_hub("Bell")
    hub.register_consumer(InboxConsumer())
    hub.register_consumer(PushConsumer(None, hub.hub_id))
    app.register_blueprint(inbox_blueprint, url_prefix="/inbox")

    @notifications.inbox.user_loader
    def load() -> str | None:
        return session.get("user")

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        return user

    @app.get("/stream")
    def stream() -> Response:
        user = session.get("user") or abort(401)
        return notifications.flask_sse_notifier(hub.hub_id, event_filter=WithRecipient(user))

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def login(base: str, user: str) -> str:
    request = urllib.request.Request(f"{base}/login/{user}", method="POST")
    with urllib.request.urlopen(request, timeout=20) as response:
        return str(response.headers["Set-Cookie"].split(";", 1)[0])


def open_stream(base: str, cookie: str) -> SSEClient:
    client = SSEClient(f"{base}/stream", headers={"Cookie": cookie})
    assert client.status == 200
    client.wait_open()
    return client


def read_until(client: SSEClient, wanted: dict[str, Any]) -> list[SSEEvent]:
    """Events until one of each type in ``wanted`` arrived (a badge with
    the given count); the notification and its badge come from two tasks,
    in either order."""
    events: list[SSEEvent] = []
    missing = dict(wanted)
    while missing:
        event = client.next_event()
        events.append(event)
        data = json.loads(event.data)
        if event.type == BADGE_EVENT_TYPE and missing.get(BADGE_EVENT_TYPE) == data["unread_count"]:
            del missing[BADGE_EVENT_TYPE]
        elif event.type in missing and event.type != BADGE_EVENT_TYPE:
            del missing[event.type]
    return events


def test_badge_follows_every_change_on_every_tab(
    served: str, notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    alice, bob = login(served, "alice"), login(served, "bob")
    with open_stream(served, alice) as tab1, open_stream(served, alice) as tab2, open_stream(served, bob) as bobs:
        with celery_worker():
            notifications.send(Event(None, "comment", "For Alice", "", recipients=["alice"]))
            for tab in (tab1, tab2):
                events = read_until(tab, {"comment": True, BADGE_EVENT_TYPE: 1})
                assert {json.loads(e.data)["recipients"][0] for e in events} == {"alice"}

            # Alice reads everything in tab 2: both tabs' badges drop to 0.
            request = urllib.request.Request(
                f"{served}/inbox/read-all",
                data=b"{}",
                method="POST",
                headers={"Cookie": alice, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=20) as response:
                assert json.loads(response.read()) == {"changed": 1, "unread_count": 0}
            for tab in (tab1, tab2):
                (badge,) = read_until(tab, {BADGE_EVENT_TYPE: 0})
                assert json.loads(badge.data)["unread_count"] == 0

            # Bob's stream carried none of it: his first events are his own.
            notifications.send(Event(None, "comment", "For Bob", "", recipients=["bob"]))
            events = read_until(bobs, {"comment": True, BADGE_EVENT_TYPE: 1})
            assert len(events) == 2
            assert {json.loads(e.data)["recipients"][0] for e in events} == {"bob"}


def test_each_badge_carries_a_higher_version_than_the_last(notifications: Notifications, inbox: Inbox) -> None:
    hub = notifications.create_hub("Versions")
    hub.register_consumer(InboxConsumer())
    inbox.add(Event(None, "c", "t", "", recipients=["alice", "bob"]), ["alice", "bob"], delivery_id="d1")
    (item,) = inbox.list("alice").items
    inbox.mark_read("alice", [item.id])
    inbox.add(Event(None, "c", "t", "", recipients=["alice"]), ["alice"], delivery_id="d2")
    inbox.publish_badges(["alice"])
    badges = [json.loads(m.data) for m in notifications.backend.history(hub.hub_id, None).messages]
    alice = [(b["version"], b["unread_count"]) for b in badges if b["recipients"] == ["alice"]]
    assert alice == [(1, 1), (2, 0), (3, 1), (4, 1)]
    assert [(b["version"], b["unread_count"]) for b in badges if b["recipients"] == ["bob"]] == [(1, 1)]
