"""The consumer that emails events through Flask-Mail.

It needs the ``mail`` extra: ``pip install ".[mail]"`` from a clone of the repository.
The SMTP server is Flask-Mail's (``MAIL_SERVER``, ``MAIL_PORT``,
``MAIL_USERNAME``, ``MAIL_PASSWORD``, ``MAIL_USE_TLS``, ``MAIL_USE_SSL``,
``MAIL_DEFAULT_SENDER``), and Flask-Mail's ``MAIL_SUPPRESS_SEND`` (on when
``TESTING`` is) and ``email_dispatched`` signal apply as usual.

Flask-Mail 0.10 opens its SMTP connection with no timeout, and leaves the
socket open when the login or ``STARTTLS`` fails; in a long-running worker the
first blocks a pool slot forever on a hung server and the second leaks a
socket per retry. So the consumer sends through a subclass of Flask-Mail's
``Connection`` that opens the connection with a timeout and closes it on
every failure; the rest (the message, the signal, ``MAIL_SUPPRESS_SEND``,
``MAIL_MAX_EMAILS``) is Flask-Mail's.

Flask-Mail 0.10 also calls ``starttls()`` and ``SMTP_SSL`` without an SSL
context, which checks neither the server's certificate nor its name, so a man
in the middle could read the SMTP credentials. This connection verifies both,
with the consumer's ``ssl_context`` (the system's trusted CAs by default).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from flask import Flask, current_app

from ..errors import ConfigurationError
from .mail_consumer import MailConsumer, MailContent, RecipientMap, SmtpSettings, timeout_option

try:
    import flask_mail
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "FlaskMailConsumer needs Flask-Mail: pip install '.[mail]' from a clone of Flask-Notifications."
    ) from exc

logger = logging.getLogger(__name__)


class _Connection(flask_mail.Connection):
    """Flask-Mail's connection, with a socket timeout, TLS that verifies the
    server, and closed whatever fails."""

    def __init__(self, mail: Any, timeout: float | None, context: ssl.SSLContext) -> None:
        super().__init__(mail)
        self.timeout = timeout
        self.context = context

    def configure_host(self) -> smtplib.SMTP | smtplib.SMTP_SSL:
        state = self.mail
        host: smtplib.SMTP
        if state.use_ssl:
            host = smtplib.SMTP_SSL(state.server, state.port, context=self.context, **timeout_option(self.timeout))
        else:
            host = smtplib.SMTP(state.server, state.port, **timeout_option(self.timeout))
        try:
            host.set_debuglevel(int(state.debug))
            if state.use_tls:
                host.starttls(context=self.context)
            if state.username and state.password:
                host.login(state.username, state.password)
        except BaseException:
            host.close()
            raise
        return host

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: TracebackType | None
    ) -> None:
        host, self.host = self.host, None
        if host is None:
            return
        try:
            host.quit()
        except (smtplib.SMTPException, OSError) as exc:
            # The server may have dropped the connection already; what
            # matters is the error that brought us here, if any.
            logger.debug("QUIT failed: %r", exc)
        finally:
            host.close()


class FlaskMailConsumer(MailConsumer):
    """Email each event through Flask-Mail.

    ::

        mail_consumer = FlaskMailConsumer.from_app(
            app, "noreply@example.org", lambda user_id: users[user_id].email,
            subject="[{{ event.event_type }}] {{ event.title }}",
            body_template="mail/event.txt",
        )
        hub.register_consumer(mail_consumer)

    :meth:`~MailConsumer.from_app` sets Flask-Mail up on the application
    unless it is already, and builds a consumer that sends with it, as
    :attr:`mail` (so that, as in 0.1, ``consumer.mail.record_messages()``
    records what it sends). The templates and recipients are those of
    :class:`MailConsumer`.

    :param mail: the ``flask_mail.Mail`` to send with (or the state
        ``Mail.init_app`` returns); ``None`` uses the one set up on the current
        application, which suits application factories.
    :param timeout: seconds an SMTP socket operation may take before the
        delivery fails (and is retried); ``None`` waits forever.
    :param ssl_context: the context of ``MAIL_USE_TLS`` and ``MAIL_USE_SSL``
        connections; ``None`` verifies the server against the system's CAs.
        See :class:`MailConsumer`.
    :param sender: the ``From`` address; ``None`` uses ``MAIL_DEFAULT_SENDER``.
    :param recipients: fixed addresses, or a callable mapping each of the
        event's recipients to addresses.
    :param options: the templates, ``ssl_context`` and ``name``; see :class:`MailConsumer`.
    """

    default_sender_key = "MAIL_DEFAULT_SENDER"

    def __init__(
        self,
        mail: Any = None,
        sender: str | tuple[str, str] | None = None,
        recipients: str | Iterable[str] | RecipientMap = (),
        *,
        timeout: float | None = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(sender, recipients, **options)
        self.mail = mail
        self.timeout = timeout

    @classmethod
    def _transport_of(cls, app: Flask) -> Any:
        # As in 0.1, ``consumer.mail.record_messages()`` records what it sends.
        mail = app.extensions.get("mail")
        return mail if mail is not None else flask_mail.Mail(app)

    def _state(self) -> Any:
        # ``mail`` is a flask_mail.Mail, bound to an app when built with one,
        # or the state Flask-Mail keeps in ``app.extensions["mail"]``.
        bound = getattr(self.mail, "state", self.mail) if self.mail is not None else None
        state = bound if bound is not None else current_app.extensions.get("mail")
        if state is None:
            raise ConfigurationError(
                "Flask-Mail is not set up on this application: build the consumer with "
                "FlaskMailConsumer.from_app(app, ...), or call Mail(app) in the module the worker imports."
            )
        return state

    def get_sender(self) -> str | None:
        sender = self._state().default_sender
        if isinstance(sender, tuple):
            return f"{sender[0]} <{sender[1]}>"
        return str(sender) if sender else None

    def settings(self) -> SmtpSettings:
        state = self._state()
        return SmtpSettings(
            host=str(state.server),
            port=int(state.port or 25),
            server_keys="MAIL_SERVER and MAIL_PORT",
            login_keys="MAIL_USERNAME and MAIL_PASSWORD",
            tls_keys="MAIL_USE_TLS or MAIL_USE_SSL",
        )

    def deliver(self, content: MailContent) -> None:
        message = flask_mail.Message(
            subject=content.subject,
            recipients=list(content.recipients),
            body=content.body,
            html=content.html,
            sender=content.sender,
            charset="utf-8",
        )
        message.msgId = content.message_id
        with _Connection(self._state(), self.timeout, self.tls_context()) as connection:
            message.send(connection)
