"""The mail consumers, delivering through a real worker to a real SMTP
server (aiosmtpd, in a thread): headers, UTF-8 content, recipients,
templates, one email per event however often the task runs, and clear,
retried, dead-lettered failures."""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from flask import Flask

from flask_notifications import Notifications, signals
from flask_notifications.consumers.flaskemail_consumer import FlaskEmailConsumer
from flask_notifications.consumers.flaskmail_consumer import FlaskMailConsumer
from flask_notifications.consumers.mail_consumer import MailConsumer
from flask_notifications.errors import (
    ConfigurationError,
    ConsumerError,
    MailAuthenticationError,
    MailDeferredError,
    MailRejectedError,
    MailServerUnavailableError,
    PermanentConsumerError,
)
from flask_notifications.event import Event
from tests.helpers import WorkerFactory, deliver_twice, free_port, send_until_dead_letter, wait_for
from tests.helpers.tls import self_signed_certificate

pytestmark = [pytest.mark.redis]

USER, PASSWORD = "notify", "s3cret"
SENDER = "Flask Notifications <noreply@example.org>"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    #: When the server accepted it (``time.time()``).
    at: float = 0.0


@dataclass
class SmtpServer:
    host: str
    port: int
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    greylist: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user"
        if address in self.greylist:
            # Refused for now, the first time only, as greylisting does.
            self.greylist.discard(address)
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), message, envelope.content, time.time())
            )
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        with self.lock:
            self.logins.append((auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "", ok))
        # handled=False: let aiosmtpd answer 535 to a refused login.
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on a free port, offering AUTH without TLS."""
    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(
        server,
        hostname=server.host,
        port=server.port,
        authenticator=server.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield server
    controller.stop()


MailFactory = Callable[..., MailConsumer]


def configure(app: Flask, kind: str, host: str, port: int, login: tuple[str, str] | None = None) -> None:
    user, password = login or ("", "")
    if kind == "flaskmail":
        app.config.update(
            MAIL_SERVER=host,
            MAIL_PORT=port,
            MAIL_USERNAME=user or None,
            MAIL_PASSWORD=password or None,
            MAIL_SUPPRESS_SEND=False,
        )
    else:
        app.config.update(EMAIL_HOST=host, EMAIL_PORT=port, EMAIL_HOST_USER=user, EMAIL_HOST_PASSWORD=password)


@pytest.fixture(params=["flaskmail", "flaskemail"])
def mail_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_consumer(app: Flask, mail_kind: str, smtp_server: SmtpServer) -> MailFactory:
    """Configure ``app`` for the real SMTP server and build consumers of the
    parametrised kind with ``from_app``."""

    def make(
        recipients: Any = ("ops@example.org",),
        sender: Any = SENDER,
        port: int | None = None,
        login: tuple[str, str] | None = None,
        **options: Any,
    ) -> MailConsumer:
        configure(app, mail_kind, smtp_server.host, port or smtp_server.port, login)
        cls = FlaskMailConsumer if mail_kind == "flaskmail" else FlaskEmailConsumer
        return cls.from_app(app, sender, recipients, **options)

    return make


def text(part: Any) -> str:
    """A text part's content; MIME's canonical line ending is CRLF, which
    Flask-Mail keeps inside base64."""
    return str(part.get_content()).replace("\r\n", "\n").rstrip("\n")


def make_event(title: str = "Title", body: str = "Body", **fields: Any) -> Event:
    return Event(None, "test", title, body, sender="system", **fields)


def test_delivers_headers_and_utf8_content(
    notifications: Notifications, celery_worker: WorkerFactory, make_consumer: MailFactory, smtp_server: SmtpServer
) -> None:
    hub = notifications.create_hub("Mail")
    hub.register_consumer(make_consumer(["ops@example.org", "Zoë Ünïcode <zoe@example.org>"]))
    event = make_event(title="Grüße aus Genève — ✓ 通知", body="Ünïcödé body: naïve café ☕\nsecond line, 日本語")
    with celery_worker():
        notifications.send(event)
        (received,) = wait_for(lambda: smtp_server.received)

    assert received.mail_from == "noreply@example.org"
    # Flask-Mail keeps recipients in a set: their order is not kept.
    assert sorted(received.rcpt_tos) == ["ops@example.org", "zoe@example.org"]
    message = received.message
    assert message["Subject"] == "Grüße aus Genève — ✓ 通知"
    assert message["From"].addresses[0].display_name == "Flask Notifications"
    assert message["From"].addresses[0].addr_spec == "noreply@example.org"
    to = {a.addr_spec: a.display_name for a in message["To"].addresses}
    assert to == {"ops@example.org": "", "zoe@example.org": "Zoë Ünïcode"}
    assert message["Message-ID"].endswith(".notification@example.org>") and message["Date"]
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert text(message) == "Ünïcödé body: naïve café ☕\nsecond line, 日本語"
    # Non-ASCII never travels raw in the headers: it is RFC 2047 encoded.
    headers = received.raw.split(b"\r\n\r\n", 1)[0]
    assert headers.isascii() and b"Subject: =?utf-8?" in headers


def test_templates_from_source_and_names(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    make_consumer: MailFactory,
    smtp_server: SmtpServer,
) -> None:
    app.jinja_env.loader = jinja2.DictLoader(
        {
            "mail/event.txt": "{{ event.title }} & {{ event.body }}\nfor {{ recipients | join(', ') }}\n"
            "priority: {{ event.priority }}",
            "mail/event.html": "<h1>{{ event.title }}</h1>",
        }
    )
    hub = notifications.create_hub("Templates")
    hub.register_consumer(
        make_consumer(
            ["ops@example.org"],
            subject="[{{ event.event_type | upper }}]  {{ event.title }}\n injected: header",
            body_template="mail/event.txt",
            html_template="mail/event.html",
        )
    )
    with celery_worker():
        notifications.send(make_event(title="Tom & <Jerry>", body="Déjà vu", priority="high"))
        (received,) = wait_for(lambda: smtp_server.received)
    message = received.message
    # One line, whitespace collapsed, no escaping in plain text.
    assert message["Subject"] == "[TEST] Tom & <Jerry> injected: header"
    assert "injected" not in message.keys()
    # Flask-Mail nests the alternative in a multipart/mixed.
    assert message.get_content_type() in ("multipart/alternative", "multipart/mixed")
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
    assert text(plain) == "Tom & <Jerry> & Déjà vu\nfor ops@example.org\npriority: high"
    assert text(html) == "<h1>Tom &amp; &lt;Jerry&gt;</h1>"


def test_recipients_mapped_from_the_event(
    notifications: Notifications, celery_worker: WorkerFactory, make_consumer: MailFactory, smtp_server: SmtpServer
) -> None:
    directory = {"u1": "ann@example.org", "u2": None, "u3": ["bob@example.org", "ann@example.org"]}
    hub = notifications.create_hub("Mapped")
    hub.register_consumer(make_consumer(lambda user_id: directory.get(user_id), html="<p>{{ event.title }}</p>"))
    with celery_worker():
        notifications.send(make_event(title="nobody", recipients=["u2", "unknown"]))
        notifications.send(make_event(title="mapped", recipients=["u1", "u2", "u3", "unknown"]))
        (received,) = wait_for(lambda: smtp_server.received)
        notifications.send(make_event(title="barrier", recipients=["u1"]))
        wait_for(lambda: len(smtp_server.received) == 2)
    assert received.message["Subject"] == "mapped"
    assert sorted(received.rcpt_tos) == ["ann@example.org", "bob@example.org"]
    assert [r.message["Subject"] for r in smtp_server.received] == ["mapped", "barrier"]


def test_login_with_the_configured_credentials(
    notifications: Notifications, celery_worker: WorkerFactory, make_consumer: MailFactory, smtp_server: SmtpServer
) -> None:
    hub = notifications.create_hub("Login")
    hub.register_consumer(make_consumer(login=(USER, PASSWORD)))
    with celery_worker():
        notifications.send(make_event(title="authenticated"))
        (received,) = wait_for(lambda: smtp_server.received)
    assert smtp_server.logins == [(USER, True)]
    assert received.message["Subject"] == "authenticated"


def test_task_run_twice_sends_one_email(
    notifications: Notifications, celery_worker: WorkerFactory, make_consumer: MailFactory, smtp_server: SmtpServer
) -> None:
    hub = notifications.create_hub("Once")
    hub.register_consumer(make_consumer())
    event = make_event(title="only once")
    assert deliver_twice(notifications, celery_worker, hub, event) == ["consumed", "duplicate"]
    assert [r.message["Subject"] for r in smtp_server.received] == ["only once"]


def run_until_dead_letter(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory, consumer: MailConsumer
) -> tuple[list[BaseException], dict[str, Any]]:
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 2
    hub = notifications.create_hub("Failing")
    hub.register_consumer(consumer)
    return send_until_dead_letter(notifications, celery_worker, make_event())


def test_refused_login_is_dead_lettered_at_once(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    make_consumer: MailFactory,
    smtp_server: SmtpServer,
    mail_kind: str,
) -> None:
    consumer = make_consumer(login=(USER, "wrong password"))
    errors, letter = run_until_dead_letter(app, notifications, celery_worker, consumer)
    # 535 is permanent: the same credentials would be refused again (and
    # repeated failed logins can lock the account), so no retry is spent.
    assert len(errors) == 1 and isinstance(errors[0], MailAuthenticationError)
    assert isinstance(errors[0], PermanentConsumerError)
    keys = "MAIL_USERNAME and MAIL_PASSWORD" if mail_kind == "flaskmail" else "EMAIL_HOST_USER and EMAIL_HOST_PASSWORD"
    assert "refused the login (535" in str(errors[0]) and keys in str(errors[0])
    assert letter["attempts"] == 1 and "MailAuthenticationError" in letter["error"] and keys in letter["error"]
    # smtplib tries each mechanism the server offers (PLAIN, LOGIN), once.
    assert 1 <= len(smtp_server.logins) <= 2 and set(smtp_server.logins) == {(USER, False)}
    assert smtp_server.received == []


def test_permanent_rejection_is_dead_lettered_at_once(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    make_consumer: MailFactory,
    smtp_server: SmtpServer,
) -> None:
    smtp_server.refuse = {"gone@example.org"}
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 5
    hub = notifications.create_hub("Rejected")
    hub.register_consumer(make_consumer(["gone@example.org"]))
    errors, letter = send_until_dead_letter(notifications, celery_worker, make_event())
    assert len(errors) == 1 and isinstance(errors[0], MailRejectedError)
    assert letter["attempts"] == 1
    assert "MailRejectedError" in letter["error"]
    assert "refused every recipient: gone@example.org (550 5.1.1 No such user)" in letter["error"]
    assert smtp_server.received == []


def test_login_not_offered_is_permanent(notifications: Notifications, make_consumer: MailFactory) -> None:
    # aiosmtpd offers AUTH only over TLS unless told otherwise.
    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(server, hostname=server.host, port=server.port, authenticator=server.authenticate)
    controller.start()
    try:
        consumer = make_consumer(port=server.port, login=(USER, PASSWORD))
        with pytest.raises(MailAuthenticationError, match="does not support what was asked") as info:
            consumer(make_event())
    finally:
        controller.stop()
    assert isinstance(info.value, PermanentConsumerError)
    assert server.logins == [] and server.received == []


def test_transient_refusal_is_retried(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    make_consumer: MailFactory,
    smtp_server: SmtpServer,
) -> None:
    smtp_server.greylist = {"ops@example.org"}
    hub = notifications.create_hub("Greylisted")
    hub.register_consumer(make_consumer(["ops@example.org"]))
    errors: list[tuple[BaseException, bool]] = []

    def on_failed(sender: Any, exception: BaseException, will_retry: bool, **kwargs: Any) -> None:
        errors.append((exception, will_retry))

    signals.consumer_failed.connect(on_failed)
    try:
        with celery_worker():
            notifications.send(make_event(title="after greylisting"))
            (received,) = wait_for(lambda: smtp_server.received)
    finally:
        signals.consumer_failed.disconnect(on_failed)
    ((error, will_retry),) = errors
    assert will_retry and isinstance(error, MailDeferredError) and not isinstance(error, PermanentConsumerError)
    assert "refused every recipient, some for now: ops@example.org (451 4.7.1 Greylisted" in str(error)
    assert received.message["Subject"] == "after greylisting"
    assert notifications.dead_letters() == []


def test_unreachable_server_is_retried_then_dead_lettered(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    make_consumer: MailFactory,
) -> None:
    closed = free_port()
    consumer = make_consumer(port=closed)
    errors, letter = run_until_dead_letter(app, notifications, celery_worker, consumer)
    assert len(errors) == 3 and all(isinstance(e, MailServerUnavailableError) for e in errors)
    assert f"Could not reach the SMTP server 127.0.0.1:{closed}" in str(errors[0])
    assert errors[0].server == f"127.0.0.1:{closed}"  # type: ignore[attr-defined]
    assert letter["attempts"] == 3 and "MailServerUnavailableError" in letter["error"]


def test_refused_recipients_raise_a_specific_error(
    app: Flask, notifications: Notifications, make_consumer: MailFactory, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse = {"gone@example.org", "left@example.org"}
    partly = make_consumer(["ops@example.org", "gone@example.org"])
    assert partly(make_event(title="partly")) is True
    (received,) = smtp_server.received
    assert received.rcpt_tos == ["ops@example.org"]
    refused = make_consumer(["gone@example.org", "left@example.org"])
    with pytest.raises(
        MailRejectedError, match=r"refused every recipient: gone@example.org \(550 5.1.1 No such user\), left@"
    ) as info:
        refused(make_event(title="refused"))
    assert info.value.server == f"127.0.0.1:{smtp_server.port}"
    assert len(smtp_server.received) == 1


# -- TLS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (an IP SAN) and its key."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"), "flask-notifications test SMTP")


@pytest.fixture(params=["starttls", "ssl"])
def tls_server(request: pytest.FixtureRequest, self_signed: tuple[Path, Path]) -> Iterator[tuple[SmtpServer, str]]:
    """A real SMTP server with the self-signed certificate, speaking STARTTLS
    (and requiring it) or implicit TLS, and offering AUTH only over TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    server = SmtpServer("127.0.0.1", free_port())
    mode = str(request.param)
    tls: dict[str, Any] = (
        {"tls_context": context, "require_starttls": True}
        if mode == "starttls"
        # aiosmtpd counts only STARTTLS as TLS for AUTH; here all is TLS.
        else {"ssl_context": context, "auth_require_tls": False}
    )
    controller = Controller(server, hostname=server.host, port=server.port, authenticator=server.authenticate, **tls)
    controller.start()
    yield server, mode
    controller.stop()


@pytest.fixture
def trusting(self_signed: tuple[Path, Path]) -> ssl.SSLContext:
    """A TLS context that trusts the self-signed certificate."""
    return ssl.create_default_context(cafile=str(self_signed[0]))


def configure_tls(
    app: Flask, kind: str, host: str, port: int, mode: str
) -> type[FlaskMailConsumer] | type[FlaskEmailConsumer]:
    """Configure ``app`` for the TLS server, with a login, and return the
    consumer class of ``kind``."""
    configure(app, kind, host, port, (USER, PASSWORD))
    prefix = "MAIL" if kind == "flaskmail" else "EMAIL"
    app.config[f"{prefix}_USE_TLS" if mode == "starttls" else f"{prefix}_USE_SSL"] = True
    return FlaskMailConsumer if kind == "flaskmail" else FlaskEmailConsumer


def test_tls_certificate_is_verified(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    mail_kind: str,
    tls_server: tuple[SmtpServer, str],
    trusting: ssl.SSLContext,
) -> None:
    server, mode = tls_server
    cls = configure_tls(app, mail_kind, server.host, server.port, mode)
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 0
    notifications.create_hub("Untrusted").register_consumer(
        cls.from_app(app, SENDER, ["ops@example.org"], subject="untrusted")
    )
    notifications.create_hub("Trusted").register_consumer(
        cls.from_app(app, SENDER, ["ops@example.org"], subject="trusted", ssl_context=trusting)
    )
    errors, letter = send_until_dead_letter(notifications, celery_worker, make_event())
    wait_for(lambda: server.received)

    # By default the certificate is checked against the system's CAs: the
    # self-signed one is refused before the credentials are sent.
    (error,) = errors
    assert isinstance(error, MailServerUnavailableError) and isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert f"The certificate of the SMTP server 127.0.0.1:{server.port} could not be verified" in str(error)
    assert "ssl_context=" in str(error)
    assert "could not be verified" in letter["error"]
    # The application that trusts it sends, logged in over TLS.
    assert [r.message["Subject"] for r in server.received] == ["trusted"]
    assert server.logins == [(USER, True)]


def test_tls_host_name_is_verified(
    app: Flask,
    notifications: Notifications,
    mail_kind: str,
    tls_server: tuple[SmtpServer, str],
    trusting: ssl.SSLContext,
) -> None:
    # The certificate names 127.0.0.1, not localhost: trusted, but for
    # another host.
    server, mode = tls_server
    cls = configure_tls(app, mail_kind, "localhost", server.port, mode)
    consumer = cls.from_app(app, SENDER, ["ops@example.org"], ssl_context=trusting)
    with pytest.raises(MailServerUnavailableError, match="Hostname mismatch|IP address mismatch|doesn't match"):
        consumer(make_event())
    assert server.logins == [] and server.received == []


def test_a_sender_is_required(app: Flask, notifications: Notifications, mail_kind: str) -> None:
    key = "MAIL_DEFAULT_SENDER" if mail_kind == "flaskmail" else "DEFAULT_FROM_EMAIL"
    cls = FlaskMailConsumer if mail_kind == "flaskmail" else FlaskEmailConsumer
    with pytest.raises(ConfigurationError, match=key):
        cls.from_app(app, None, ["ops@example.org"])
    app.config[key] = "default@example.org"
    if mail_kind == "flaskmail":
        del app.extensions["mail"]
    consumer = cls.from_app(app, None, ["ops@example.org"])
    content = consumer.compose(make_event(title=""))
    assert content is not None and content.sender == "default@example.org"
    assert content.subject == f"Event {content.event_id}"


def test_invalid_options_are_refused(app: Flask, notifications: Notifications) -> None:
    app.config["DEFAULT_FROM_EMAIL"] = "noreply@example.org"
    with pytest.raises(ConsumerError, match="needs recipients"):
        FlaskEmailConsumer.from_app(app, None, [])
    with pytest.raises(ConsumerError, match="either subject= or subject_template="):
        FlaskEmailConsumer.from_app(app, None, ["a@example.org"], subject="x", subject_template="y.txt")
    with pytest.raises(ConsumerError, match="line break"):
        FlaskEmailConsumer.from_app(app, None, ["a@example.org\r\nBcc: victim@example.org"])
    with pytest.raises(ConsumerError, match="ssl_context must be an ssl.SSLContext, not str"):
        FlaskEmailConsumer.from_app(app, None, ["a@example.org"], ssl_context="/etc/ssl/ca.pem")
    app.config.update(EMAIL_USE_TLS=True, EMAIL_USE_SSL=True)
    with pytest.raises(ConfigurationError, match="not both"):
        FlaskEmailConsumer.from_app(app, None, ["a@example.org"])


def test_flask_mail_testing_mode_records_instead_of_sending(app: Flask, notifications: Notifications) -> None:
    import flask_mail

    app.config.update(TESTING=True, MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port())
    mail = flask_mail.Mail(app)
    consumer = FlaskMailConsumer(mail, SENDER, ["ops@example.org"], subject="{{ event.title }}!")
    with mail.record_messages() as outbox:
        assert consumer(make_event(title="recorded")) is True
    (message,) = outbox
    assert message.subject == "recorded!" and message.recipients == ["ops@example.org"]
