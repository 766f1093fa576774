"""The mail consumers' templates: a folder per hub through Flask's loader
(subject, text, HTML autoescaped), digests listing every event once, and
consumers that set none behaving as before."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flask
import jinja2
import pytest
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.consumers.flaskemail_consumer import FlaskEmailConsumer
from flask_notifications.consumers.mail_consumer import MailConsumer
from flask_notifications.consumers.mail_templates import HUB_TEMPLATES, digest_events, is_digest
from flask_notifications.errors import ConsumerError
from flask_notifications.event import Event
from tests.consumers.test_mail import SmtpServer, configure, smtp_server, text  # noqa: F401 - the fixture
from tests.helpers import WorkerFactory, wait_for

SENDER = "noreply@example.org"

TEMPLATES = {
    "notifications/orders/subject.txt": "Order: {{ event.title }}",
    "notifications/orders/body.txt": "{{ event.title }} for {{ recipients | join(', ') }}",
    "notifications/orders/body.html": "<p>{{ event.title }}</p>",
    "notifications/orders/digest_subject.txt": "{{ events | length }} orders",
    "notifications/orders/digest.html": "<ul>{% for e in events %}<li>{{ e.title }}</li>{% endfor %}</ul>",
    "mail/broken/body.txt": "{% include 'mail/broken/missing.txt' %}",
}


def event(title: str = "Tom & <Jerry>", body: str = "Body", **fields: Any) -> Event:
    return Event(None, "order", title, body, recipients=["alice"], **fields)


def digest(*events: Event, title: str = "Your digest") -> Event:
    return Event(None, "digest", title, "", recipients=["alice"], events=[e.to_dict() for e in events])


@pytest.fixture
def plain_app() -> Iterator[Flask]:
    app = Flask("templates")
    app.jinja_env.loader = jinja2.DictLoader(TEMPLATES)
    with app.app_context():
        yield app


def consumer(app: Flask, **options: Any) -> MailConsumer:
    app.config.update(EMAIL_HOST="127.0.0.1", EMAIL_PORT=25)
    return FlaskEmailConsumer.from_app(app, SENDER, lambda user: f"{user}@example.org", **options)


def test_a_consumer_without_templates_sends_as_before(plain_app: Flask) -> None:
    content = consumer(plain_app).compose(event())
    assert content is not None
    assert (content.subject, content.body, content.html) == ("Tom & <Jerry>", "Body", None)


def test_a_folder_gives_the_parts_it_has_and_html_is_autoescaped(plain_app: Flask) -> None:
    content = consumer(plain_app, templates="notifications/orders").compose(event())
    assert content is not None
    assert content.subject == "Order: Tom & <Jerry>"
    assert content.body == "Tom & <Jerry> for alice@example.org"
    assert content.html == "<p>Tom &amp; &lt;Jerry&gt;</p>"
    # A part given as an argument wins over its file.
    content = consumer(plain_app, templates="notifications/orders", subject="{{ event.body }}!").compose(event())
    assert content is not None and content.subject == "Body!" and content.body.startswith("Tom")
    # A folder without the files leaves the defaults.
    content = consumer(plain_app, templates="notifications/none").compose(event())
    assert content is not None and (content.subject, content.body, content.html) == ("Tom & <Jerry>", "Body", None)


def test_a_missing_include_is_not_taken_for_a_missing_file(plain_app: Flask) -> None:
    with pytest.raises(jinja2.TemplateNotFound, match="mail/broken/missing.txt"):
        consumer(plain_app, templates="mail/broken").compose(event())


def test_a_digest_lists_every_event_once_by_default(plain_app: Flask) -> None:
    first, second = event("First", "one"), event("Second <2>", "")
    summary = digest(first, second, first)
    assert is_digest(summary) and not is_digest(first)
    assert [e["title"] for e in digest_events(summary)] == ["First", "Second <2>"]
    content = consumer(plain_app).compose(summary)
    assert content is not None
    assert content.subject == "Your digest"
    assert content.body == "- First\n  one\n- Second <2>\n"
    assert content.html is None
    untitled = consumer(plain_app).compose(digest(first, second, title=""))
    assert untitled is not None and untitled.subject == "2 notifications"
    # An event of type "digest" without a list of events is an event.
    plain = consumer(plain_app).compose(Event(None, "digest", "Just a title", "text", recipients=["alice"]))
    assert plain is not None and plain.body == "text"


def test_digest_templates_from_the_folder_and_from_source(plain_app: Flask) -> None:
    summary = digest(event("A & B"), event("C"))
    content = consumer(plain_app, templates="notifications/orders").compose(summary)
    assert content is not None
    assert content.subject == "2 orders"
    assert content.html == "<ul><li>A &amp; B</li><li>C</li></ul>"
    # The folder has no digest.txt: the default list.
    assert content.body == "- A & B\n  Body\n- C\n  Body\n"
    content = consumer(
        plain_app, digest_body="{{ events | map(attribute='title') | join('; ') }}", digest_html="<b>{{ event.title }}"
    ).compose(summary)
    assert content is not None and content.body == "A & B; C" and content.html == "<b>Your digest"


def test_invalid_template_options_are_refused(plain_app: Flask) -> None:
    with pytest.raises(ConsumerError, match="templates is a folder"):
        consumer(plain_app, templates="/")


@pytest.mark.redis
def test_each_hub_has_its_own_templates_through_a_real_worker(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    app.jinja_env.loader = jinja2.DictLoader(TEMPLATES)
    configure(app, "flaskemail", smtp_server.host, smtp_server.port)
    for label in ("orders", "other"):
        hub = notifications.create_hub(label)
        hub.register_consumer(
            FlaskEmailConsumer.from_app(app, SENDER, lambda user: f"{user}@example.org", templates=HUB_TEMPLATES)
        )
    with celery_worker():
        notifications.send(event())
        wait_for(lambda: len(smtp_server.received) == 2)
        notifications.send(digest(event("A & B"), event("C")))
        wait_for(lambda: len(smtp_server.received) == 4)
    by_subject = {r.message["Subject"]: r.message for r in smtp_server.received}
    assert set(by_subject) == {"Order: Tom & <Jerry>", "Tom & <Jerry>", "2 orders", "Your digest"}
    ordered = by_subject["Order: Tom & <Jerry>"]
    html = ordered.get_body(("html",))
    assert html is not None and text(html) == "<p>Tom &amp; &lt;Jerry&gt;</p>"
    assert by_subject["Tom & <Jerry>"].get_content_type() == "text/plain"
    assert text(by_subject["Your digest"]) == "- A & B\n  Body\n- C\n  Body"
    digest_html = by_subject["2 orders"].get_body(("html",))
    assert digest_html is not None and text(digest_html) == "<ul><li>A &amp; B</li><li>C</li></ul>"


def test_html_given_by_a_template_name_is_autoescaped_whatever_its_extension(plain_app: Flask) -> None:
    # "HTML is autoescaped, whatever its origin": Flask only autoescapes
    # templates it loads by name when the name ends in .html (or .xml...).
    loader = plain_app.jinja_env.loader
    assert isinstance(loader, jinja2.DictLoader)
    loader.mapping["mail/order.html.j2"] = "<p>{{ event.title }}</p>"
    content = consumer(plain_app, html_template="mail/order.html.j2").compose(event(title="<script>x()</script>"))
    assert content is not None and content.html == "<p>&lt;script&gt;x()&lt;/script&gt;</p>"
    # Flask's own rendering of the same name is left as Flask does it.
    assert flask.render_template("mail/order.html.j2", event=event(title="<i>")) == "<p><i></p>"
    # A plain-text part given by name stays as it is.
    loader.mapping["mail/subject.txt"] = "{{ event.title }}"
    content = consumer(plain_app, subject_template="mail/subject.txt").compose(event(title="a & b"))
    assert content is not None and content.subject == "a & b"
