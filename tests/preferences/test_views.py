"""The preferences' JSON blueprint: the current user's settings only, the
inbox's rules against cross-site requests, and errors that say what to do."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, session

from flask_notifications import Notifications
from flask_notifications.preferences import Preferences, preferences_blueprint
from tests.helpers import free_port
from tests.preferences.conftest import Recording

pytestmark = [pytest.mark.redis]

PREFIX = "/notifications/preferences"


@pytest.fixture
def web(app: Flask, notifications: Notifications, preferences: Preferences) -> Any:
    """A test client of an app with the blueprint, two hubs, and users who
    log in at ``/login/<user>``."""
    app.config["SECRET_KEY"] = "preferences-tests"
    app.register_blueprint(preferences_blueprint, url_prefix=PREFIX)
    news = notifications.create_hub("news")
    news.register_consumer(Recording("email"))
    news.register_consumer(Recording("stream"))
    preferences.define(news, defaults={"email": False})
    security = notifications.create_hub("security")
    security.register_consumer(Recording("email"))
    preferences.define(security, required=True)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        return user

    @notifications.inbox.user_loader
    def load() -> str | None:
        return session.get("user")

    return app.test_client()


def post(web: Any, path: str, body: Any, **headers: str) -> Any:
    return web.post(PREFIX + path, json=body, headers=headers)


def test_anonymous_is_refused(web: Any) -> None:
    for response in (web.get(PREFIX + "/"), post(web, "/", {"hubs": {}}), post(web, "/reset", {})):
        assert response.status_code == 401
        assert response.json == {"error": "Log in to see your notification settings."}


def test_read_change_and_reset(web: Any, preferences: Preferences) -> None:
    web.post("/login/alice")
    expected = {
        "news": {"channels": {"email": False, "stream": True}, "required": []},
        "security": {"channels": {"email": True}, "required": ["email"]},
    }
    assert web.get(PREFIX + "/").json == {"hubs": expected}
    changed = post(web, "/", {"hubs": {"news": {"email": True, "stream": False}}})
    assert changed.status_code == 200
    assert changed.json["hubs"]["news"]["channels"] == {"email": True, "stream": False}
    # Only alice's settings changed.
    assert preferences.get("bob")["news"] == {"email": False, "stream": True}
    assert post(web, "/reset", {"hub": "news"}).json == {"hubs": expected}


def test_opting_out_of_a_required_hub_is_409(web: Any, preferences: Preferences) -> None:
    web.post("/login/alice")
    response = post(web, "/", {"hubs": {"news": {"stream": False}, "security": {"email": False}}})
    assert response.status_code == 409
    assert response.json == {
        "error": "Hub 'security' is required on channel 'email': its notifications cannot be turned off."
    }
    # All or nothing.
    assert preferences.get("alice")["news"]["stream"] is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"news": {"email": True}}, 'The body is a JSON object such as {"hubs"'),
        ({"hubs": {"sports": {"email": True}}}, "There is no hub 'sports'"),
        ({"hubs": {"news": {"sms": True}}}, "Hub 'news' has no channel 'sms'"),
        ({"hubs": {"news": {"email": "yes"}}}, "news/email is true or false"),
    ],
)
def test_bad_bodies_are_400(web: Any, body: Any, message: str) -> None:
    web.post("/login/alice")
    response = post(web, "/", body)
    assert response.status_code == 400 and message in response.json["error"]


def test_cross_site_and_non_json_posts_are_refused(web: Any, preferences: Preferences) -> None:
    web.post("/login/alice")
    body = {"hubs": {"news": {"stream": False}}}
    form = web.post(PREFIX + "/", data={"hubs": "x"})
    assert form.status_code == 415 and "JSON" in form.json["error"]
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = post(web, "/", body, **headers)
        assert response.status_code == 403 and "Cross-site" in response.json["error"]
    assert preferences.get("alice")["news"]["stream"] is True
    same = post(web, "/", body, Origin="http://localhost", **{"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200 and preferences.get("alice")["news"]["stream"] is False


def test_database_down_is_503(web: Any, app: Flask, notifications: Notifications) -> None:
    web.post("/login/alice")
    notifications.inbox.close()
    working = app.config["NOTIFICATIONS_INBOX_URL"]
    app.config["NOTIFICATIONS_INBOX_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    try:
        response = web.get(PREFIX + "/")
        assert response.status_code == 503
        assert response.json == {"error": "The notification settings are unavailable; try again shortly."}
    finally:
        notifications.inbox.close()
        app.config["NOTIFICATIONS_INBOX_URL"] = working
