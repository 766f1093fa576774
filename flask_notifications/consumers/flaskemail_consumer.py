"""The consumer that emails events with the standard library, configured by
the ``EMAIL_*`` keys of Flask-Email.

The original consumer wrapped Flask-Email. Its last release, 1.4.4 (2013),
does not run on Python 3: it installs, but importing it fails with a
``SyntaxError`` (``except ImportError, e:`` in ``flask_email/__init__.py``,
and the same Python 2 syntax in ``encoding.py`` and
``backends/filebased.py``); it also uses ``basestring``/``unicode`` and
imports ``flask.ext.email``, which Flask removed in 1.0. Checked with
Python 3.11 and Flask 3 in a throwaway virtualenv. So this consumer keeps the
class, its import path and Flask-Email's settings, and sends with
:mod:`smtplib` and :class:`email.message.EmailMessage` instead; it needs no
extra dependency.

========================  =====================  ====================================
Key                       Default                Meaning
========================  =====================  ====================================
``EMAIL_HOST``            ``"localhost"``        SMTP server host
``EMAIL_PORT``            ``25``                 SMTP server port
``EMAIL_HOST_USER``       ``""``                 login; empty skips ``AUTH``
``EMAIL_HOST_PASSWORD``   ``""``                 password
``EMAIL_USE_TLS``         ``False``              ``STARTTLS`` after connecting
``EMAIL_USE_SSL``         ``False``              implicit TLS (port 465 usually)
``EMAIL_TIMEOUT``         ``30``                 socket timeout in seconds; ``None``: none
``DEFAULT_FROM_EMAIL``    ``None``               sender when the consumer has none
========================  =====================  ====================================
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from typing import Any

from flask import Flask, current_app

from ..errors import ConfigurationError, ConsumerError
from .mail_consumer import MailConsumer, MailContent, RecipientMap, SmtpSettings, timeout_option

logger = logging.getLogger(__name__)

#: The settings this consumer reads, and their defaults.
EMAIL_DEFAULTS: dict[str, Any] = {
    "EMAIL_HOST": "localhost",
    "EMAIL_PORT": 25,
    "EMAIL_HOST_USER": "",
    "EMAIL_HOST_PASSWORD": "",
    "EMAIL_USE_TLS": False,
    "EMAIL_USE_SSL": False,
    "EMAIL_TIMEOUT": 30,
    "DEFAULT_FROM_EMAIL": None,
}


def email_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``EMAIL_*`` settings of ``config``, defaults filled in.

    :raises ConfigurationError: both ``EMAIL_USE_TLS`` and ``EMAIL_USE_SSL``
        are set.
    """
    settings = {key: config.get(key, default) for key, default in EMAIL_DEFAULTS.items()}
    if settings["EMAIL_USE_TLS"] and settings["EMAIL_USE_SSL"]:
        raise ConfigurationError(
            "EMAIL_USE_TLS and EMAIL_USE_SSL are both set; use EMAIL_USE_SSL for implicit TLS "
            "(usually port 465) or EMAIL_USE_TLS for STARTTLS (usually port 587), not both."
        )
    return settings


def build_message(content: MailContent) -> EmailMessage:
    """The :class:`EmailMessage` of ``content``: UTF-8 text, with an HTML
    alternative when there is one, and headers encoded for SMTP."""
    message = EmailMessage(policy=SMTP)
    message["Subject"] = content.subject
    message["From"] = content.sender
    message["To"] = ", ".join(content.recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = content.message_id
    message.set_content(content.body, charset="utf-8", cte=_cte(content.body))
    if content.html is not None:
        message.add_alternative(content.html, subtype="html", charset="utf-8", cte=_cte(content.html))
    return message


def _cte(text: str) -> str | None:
    # Quoted-printable keeps non-ASCII text 7-bit clean for servers without
    # 8BITMIME, and readable in the raw message.
    return None if text.isascii() else "quoted-printable"


class FlaskEmailConsumer(MailConsumer):
    """Email each event through the SMTP server of the ``EMAIL_*`` settings.

    ::

        hub.register_consumer(FlaskEmailConsumer.from_app(app, "noreply@example.org", ["ops@example.org"]))

    The arguments are positioned as in 0.1, ``(mail, sender, recipients)``;
    0.1's ``mail`` was a Flask-Email mailbox bound to an application, which
    does not exist on Python 3, so here it is the application itself.
    :meth:`~MailConsumer.from_app` passes it, after checking its ``EMAIL_*``
    settings. The templates and recipients are those of :class:`MailConsumer`.

    :param mail: the application whose ``EMAIL_*`` settings are used;
        ``None`` uses the current application's, which suits application
        factories.
    :param sender: the ``From`` address; ``None`` uses ``DEFAULT_FROM_EMAIL``.
    :param recipients: fixed addresses, or a callable mapping each of the
        event's recipients to addresses.
    :param options: the templates, ``ssl_context`` and ``name``; see :class:`MailConsumer`.
    :raises ConsumerError: ``mail`` is not a Flask application.
    """

    default_sender_key = "DEFAULT_FROM_EMAIL"

    def __init__(
        self,
        mail: Flask | None = None,
        sender: str | tuple[str, str] | None = None,
        recipients: str | Iterable[str] | RecipientMap = (),
        **options: Any,
    ) -> None:
        if mail is not None and not isinstance(mail, Flask):
            raise ConsumerError(
                f"FlaskEmailConsumer(mail, sender, recipients) takes the Flask application as mail, not "
                f"{type(mail).__name__}: Flask-Email's mailboxes do not run on Python 3, and the "
                "EMAIL_* settings of the application replace them."
            )
        super().__init__(sender, recipients, **options)
        self.mail = mail

    @classmethod
    def _transport_of(cls, app: Flask) -> Flask:
        email_settings(app.config)  # checked now rather than in the worker
        return app

    def _config(self) -> Mapping[str, Any]:
        return self.mail.config if self.mail is not None else current_app.config

    def get_sender(self) -> str | None:
        sender = self._config().get("DEFAULT_FROM_EMAIL")
        return str(sender) if sender else None

    def settings(self) -> SmtpSettings:
        config = email_settings(self._config())
        return SmtpSettings(
            host=str(config["EMAIL_HOST"]),
            port=int(config["EMAIL_PORT"]),
            server_keys="EMAIL_HOST and EMAIL_PORT",
            login_keys="EMAIL_HOST_USER and EMAIL_HOST_PASSWORD",
            tls_keys="EMAIL_USE_TLS or EMAIL_USE_SSL",
        )

    def deliver(self, content: MailContent) -> None:
        config = email_settings(self._config())
        host, port, timeout = str(config["EMAIL_HOST"]), int(config["EMAIL_PORT"]), config["EMAIL_TIMEOUT"]
        message = build_message(content)
        smtp: smtplib.SMTP
        if config["EMAIL_USE_SSL"]:
            smtp = smtplib.SMTP_SSL(host, port, context=self.tls_context(), **timeout_option(timeout))
        else:
            smtp = smtplib.SMTP(host, port, **timeout_option(timeout))
        with smtp:
            if config["EMAIL_USE_TLS"]:
                smtp.starttls(context=self.tls_context())
            if config["EMAIL_HOST_USER"]:
                smtp.login(str(config["EMAIL_HOST_USER"]), str(config["EMAIL_HOST_PASSWORD"]))
            # Bare addresses for the envelope: a display name with non-ASCII
            # letters would make smtplib send raw UTF-8 headers (SMTPUTF8).
            to_addrs = [parseaddr(addr)[1] or addr for addr in content.recipients]
            refused = smtp.send_message(message, from_addr=parseaddr(content.sender)[1], to_addrs=to_addrs)
        if refused:
            # Some recipients got it: retrying would send them a copy again.
            logger.warning(
                "%r: the SMTP server refused some recipients of event %s: %s", self, content.event_id, refused
            )
