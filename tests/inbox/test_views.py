"""The inbox's JSON blueprint, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import string
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, session

from flask_notifications import Event, Notifications
from flask_notifications.inbox import Inbox, inbox_blueprint
from tests.helpers import free_port

pytestmark = [pytest.mark.redis]

PREFIX = "/notifications/inbox"
#: The blueprint's largest body (views.MAX_BODY_SIZE).
MAX_BODY_SIZE = 64 * 1024


def add(inbox: Inbox, user: str, title: str = "Hi") -> int:
    event = Event(None, "comment", title, "", recipients=[user])
    inbox.add(event, [user], delivery_id=event["event_id"])
    return inbox.list(user, limit=1).items[0].id


@pytest.fixture
def web(app: Flask, notifications: Notifications, inbox: Inbox) -> Any:
    """A test client of an app with the inbox blueprint, whose users log in
    at ``/login/<user>`` (a session) and are found by a user loader."""
    app.config["SECRET_KEY"] = "inbox-tests"
    app.register_blueprint(inbox_blueprint, url_prefix=PREFIX)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        return user

    @notifications.inbox.user_loader
    def load() -> str | None:
        return session.get("user")

    return app.test_client()


def post(web: Any, path: str, body: Any = None, **headers: str) -> Any:
    return web.post(PREFIX + path, json={} if body is None else body, headers=headers)


def test_anonymous_is_refused(web: Any, inbox: Inbox) -> None:
    for response in (web.get(PREFIX + "/"), web.get(PREFIX + "/count"), post(web, "/read-all")):
        assert response.status_code == 401
        assert response.json == {"error": "Log in to see your notifications."}


def test_list_pages_and_counts(web: Any, inbox: Inbox) -> None:
    ids = [add(inbox, "alice", f"n{n}") for n in range(5)]
    add(inbox, "bob")
    web.post("/login/alice")
    first = web.get(PREFIX + "/?limit=2").json
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    assert first["unread_count"] == 5
    assert first["items"][0]["event"]["title"] == "n4" and first["items"][0]["read"] is False
    second = web.get(PREFIX + f"/?limit=2&before={first['next_cursor']}").json
    assert [item["id"] for item in second["items"]] == ids[::-1][2:4]
    assert web.get(PREFIX + "/count").json == {"unread_count": 5, "unseen_count": 5}
    post(web, "/read", {"ids": [ids[0]]})
    assert [item["id"] for item in web.get(PREFIX + "/?unread_only=1").json["items"]] == ids[:0:-1]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("before=not-a-cursor", "not a cursor"),
        ("before=aTow", "not a cursor"),  # "i:0", an id no row has
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("limit=ten", "limit"),
        ("unread_only=maybe", "boolean"),
    ],
)
def test_bad_queries_are_400(web: Any, inbox: Inbox, query: str, message: str) -> None:
    web.post("/login/alice")
    response = web.get(PREFIX + "/?" + query)
    assert response.status_code == 400, response.json
    assert message in response.json["error"]


def test_changes(web: Any, inbox: Inbox) -> None:
    ids = [add(inbox, "alice") for _ in range(4)]
    web.post("/login/alice")
    assert post(web, "/read", {"ids": ids[:2]}).json == {"changed": 2, "unread_count": 2}
    assert post(web, "/unread", {"ids": ids[:1]}).json == {"changed": 1, "unread_count": 3}
    assert post(web, "/seen", {"ids": ids[:1]}).json == {"changed": 1, "unread_count": 3}
    assert post(web, "/seen").json == {"changed": 3, "unread_count": 3}
    assert post(web, "/archive", {"ids": [ids[3]]}).json == {"changed": 1, "unread_count": 2}
    assert [i["id"] for i in web.get(PREFIX + "/?archived=1").json["items"]] == [ids[3]]
    assert post(web, "/unarchive", {"ids": [ids[3]]}).json == {"changed": 1, "unread_count": 3}
    assert post(web, "/read-all").json == {"changed": 3, "unread_count": 0}
    assert post(web, "/delete", {"ids": [ids[0]]}).json == {"changed": 1, "unread_count": 0}
    assert len(inbox.list("alice").items) == 3


@pytest.mark.parametrize("path", ["/read", "/unread", "/seen", "/archive", "/unarchive", "/delete"])
def test_other_users_and_unknown_ids_are_404(web: Any, inbox: Inbox, path: str) -> None:
    mine = add(inbox, "alice")
    theirs = add(inbox, "bob")
    web.post("/login/alice")
    for wrong in (theirs, theirs + 1000):
        response = post(web, path, {"ids": [mine, wrong]})
        assert response.status_code == 404
        assert response.json["ids"] == [wrong] and "nothing was changed" in response.json["error"]
    (item,) = inbox.list("bob").items
    assert item.read_at is None and item.seen_at is None and item.archived_at is None
    assert inbox.unread_count("alice") == 1


@pytest.mark.parametrize(
    "body",
    [{"ids": ["x"]}, {"ids": [0]}, {"ids": "1"}, {"ids": None}, {}, [1, 2], "ids", {"ids": list(range(1, 1100))}],
    ids=repr,
)
def test_malformed_bodies_are_400(web: Any, inbox: Inbox, body: Any) -> None:
    web.post("/login/alice")
    response = post(web, "/read", body)
    assert response.status_code == 400
    assert response.json["error"]


def test_cross_site_posts_are_refused(web: Any, inbox: Inbox) -> None:
    item = add(inbox, "alice")
    web.post("/login/alice")
    # A cross-site HTML form can only send form data or text/plain.
    form = web.post(PREFIX + "/read", data={"ids": str(item)})
    assert form.status_code == 415 and "JSON" in form.json["error"]
    plain = web.post(PREFIX + "/read-all", data='{"ids": []}', content_type="text/plain")
    assert plain.status_code == 415
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        response = post(web, "/read-all", **headers)
        assert response.status_code == 403 and "Cross-site" in response.json["error"]
    assert inbox.unread_count("alice") == 1
    same = post(web, "/read-all", Origin="http://localhost", **{"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200 and inbox.unread_count("alice") == 0


def test_database_down_is_503(web: Any, app: Flask, notifications: Notifications) -> None:
    web.post("/login/alice")
    notifications.inbox.close()
    working = app.config["NOTIFICATIONS_INBOX_URL"]
    app.config["NOTIFICATIONS_INBOX_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    try:
        response = web.get(PREFIX + "/count")
        assert response.status_code == 503
        assert response.json == {"error": "The notification inbox is unavailable; try again shortly."}
    finally:
        notifications.inbox.close()
        app.config["NOTIFICATIONS_INBOX_URL"] = working


def test_exhausted_connection_pool_is_503(web: Any, app: Flask, notifications: Notifications) -> None:
    web.post("/login/alice")
    working = app.config["NOTIFICATIONS_INBOX_URL"]
    engine = sa.create_engine(working, pool_size=1, max_overflow=0, pool_timeout=0.05)
    notifications.inbox.close()
    app.config["NOTIFICATIONS_INBOX_URL"] = engine
    try:
        with engine.connect():  # the pool's only connection is busy
            response = web.get(PREFIX + "/count")
        assert response.status_code == 503
        assert response.json == {"error": "The notification inbox is unavailable; try again shortly."}
    finally:
        notifications.inbox.close()
        engine.dispose()
        app.config["NOTIFICATIONS_INBOX_URL"] = working


def test_flask_login_current_user_works_out_of_the_box(app: Flask, notifications: Notifications, inbox: Inbox) -> None:
    from flask_login import LoginManager, UserMixin, login_user

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app.config["SECRET_KEY"] = "inbox-tests"
    manager = LoginManager(app)
    manager.user_loader(User)
    app.register_blueprint(inbox_blueprint, url_prefix=PREFIX)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        login_user(User(user))
        return user

    add(inbox, "7")
    add(inbox, "8")
    web = app.test_client()
    assert web.get(PREFIX + "/count").status_code == 401
    web.post("/login/7")
    assert web.get(PREFIX + "/count").json["unread_count"] == 1
    assert post(web, "/read-all").json == {"changed": 1, "unread_count": 0}
    assert inbox.unread_count("8") == 1


# -- signed cursors and bad bodies (issue 22) ----------------------------------


def test_a_cursor_altered_by_one_character_is_400(web: Any, inbox: Inbox) -> None:
    for n in range(3):
        add(inbox, "alice", f"n{n}")
    web.post("/login/alice")
    cursor = web.get(PREFIX + "/?limit=1").json["next_cursor"]
    assert web.get(PREFIX + f"/?limit=1&before={cursor}").status_code == 200
    alphabet = string.ascii_letters + string.digits + "-_"
    accepted = []
    for position, char in enumerate(cursor):
        for other in alphabet.replace(char, ""):
            altered = cursor[:position] + other + cursor[position + 1 :]
            response = web.get(PREFIX + f"/?limit=1&before={altered}")
            if response.status_code != 400 or "not a cursor" not in response.json["error"]:
                accepted.append(altered)
    assert accepted == []


def test_a_cursor_the_inbox_did_not_sign_is_400(web: Any, inbox: Inbox) -> None:
    ids = [add(inbox, "alice", f"n{n}") for n in range(3)]
    web.post("/login/alice")
    # What a cursor was before it was signed: base64 of "i:<id>".
    forged = base64.urlsafe_b64encode(f"i:{ids[-1]}".encode()).decode().rstrip("=")
    response = web.get(PREFIX + f"/?before={forged}")
    assert response.status_code == 400 and "not a cursor" in response.json["error"]


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize("depth", [17, 100, 900, 990, 1000, 5000, 100_000])
@pytest.mark.parametrize("shape", ["ids", "top", "object"])
@pytest.mark.parametrize("path", ["/read", "/read-all", "/seen"])
def test_deeply_nested_json_is_400_and_changes_nothing(
    web: Any, inbox: Inbox, depth: int, shape: str, path: str
) -> None:
    add(inbox, "alice")
    web.post("/login/alice")
    body = {
        "ids": '{"ids": ' + nested(depth) + "}",
        "top": nested(depth),
        "object": '{"a": ' * depth + "1" + "}" * depth,
    }[shape]
    response = web.post(PREFIX + path, data=body, content_type="application/json")
    assert response.status_code == (400 if len(body) <= MAX_BODY_SIZE else 413), response.data[:200]
    assert response.json["error"]
    assert inbox.unread_count("alice") == 1 and inbox.unseen_count("alice") == 1


def test_an_oversized_body_is_413_and_changes_nothing(web: Any, inbox: Inbox) -> None:
    item = add(inbox, "alice")
    web.post("/login/alice")
    body = json.dumps({"ids": [item], "padding": "x" * 200_000})
    response = web.post(PREFIX + "/read", data=body, content_type="application/json")
    assert response.status_code == 413
    assert "larger than" in response.json["error"]
    assert inbox.unread_count("alice") == 1


def test_an_empty_body_is_an_empty_object(web: Any, inbox: Inbox) -> None:
    add(inbox, "alice")
    web.post("/login/alice")
    response = web.post(PREFIX + "/read-all", data=b"", content_type="application/json")
    assert response.json == {"changed": 1, "unread_count": 0}
