"""The browser client the blueprint serves, and the template helpers that
put it and the bell on a page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, render_template_string

from flask_notifications import Notifications
from flask_notifications.streaming.client import CLIENT_FILES, client_url


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask("assets_app")
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_SSE_BLUEPRINT=True,
        NOTIFICATIONS_SSE_URL_PREFIX="/live",
    )
    Notifications(app)

    @app.get("/inbox/")
    def list_notifications() -> str:  # stands in for the inbox blueprint
        return "[]"

    app.add_url_rule("/inbox/", endpoint="notifications_inbox.list_notifications", view_func=list_notifications)
    yield app


@pytest.mark.parametrize("name", CLIENT_FILES)
def test_the_blueprint_serves_the_client(app: Flask, name: str) -> None:
    answer = app.test_client().get(f"/live/static/{name}")
    assert answer.status_code == 200
    if name.endswith(".js"):
        # A module script of another type does not run.
        assert answer.mimetype == "text/javascript"
    assert len(answer.data) > 1000
    answer.close()


def test_the_script_helper_connects_and_escapes(app: Flask) -> None:
    with app.test_request_context("/"):
        html = render_template_string(
            "{{ notifications_client_script(['news', 'private'], scope=user, nonce='n0nce') }}", user="</script><b>"
        )
        assert client_url() == "/live/static/notifications.js"
        with pytest.raises(ValueError, match="not a file of the browser client"):
            client_url("../app.py")
    assert html.startswith(
        '<script type="module" nonce="n0nce">import { connect } from "/live/static/notifications.js";'
    )
    assert '"url": "/live/events", "hubs": ["news", "private"], "shared": true' in html
    assert html.count("</script>") == 1 and "<b>" not in html
    assert '"scope": "\\u003c/script\\u003e\\u003cb\\u003e"' in html


def test_the_bell_macro_writes_the_element_and_its_module(app: Flask) -> None:
    with app.test_request_context("/"):
        html = render_template_string(
            '{% from "notifications/bell.html" import notification_bell %}'
            '{{ notification_bell("Inbox", scope=user, label="Inbox & more") }}',
            user='"tom"',
        )
    assert '<script type="module" src="/live/static/notification-bell.js"></script>' in html
    assert (
        '<notification-bell hub="Inbox" api="/inbox/" events="/live/events" scope="&#34;tom&#34;" '
        'label="Inbox &amp; more" page-size="10"></notification-bell>'
    ) in html
