"""What the two mail consumers share: the templates, the recipients, the
content of the message and the translation of SMTP failures.

:class:`FlaskMailConsumer` and :class:`FlaskEmailConsumer` differ only in how
they hand the message to an SMTP server; everything that decides *what* is
sent lives here, in :class:`MailConsumer`.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.errors import MessageError
from email.headerregistry import Address
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, Self

from ..errors import (
    ConfigurationError,
    ConsumerError,
    MailAuthenticationError,
    MailDeferredError,
    MailError,
    MailRejectedError,
    MailServerUnavailableError,
)
from ..event import Event, as_event
from .consumer import EventConsumer
from .mail_templates import DEFAULTS, MailTemplates, explicit

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)

#: Maps one of the event's recipients (such as a user id) to an address, a
#: few addresses, or ``None`` to skip that recipient.
RecipientMap = Callable[[str], str | Iterable[str] | None]

#: The subject when no template is given: the event's title.
DEFAULT_SUBJECT = DEFAULTS["subject"]
#: The plain-text body when no template is given: the event's body.
DEFAULT_BODY = DEFAULTS["body"]


@dataclass(frozen=True)
class MailContent:
    """One email, ready for a transport.

    :param sender: the ``From`` address, possibly with a display name.
    :param recipients: the ``To`` addresses, without duplicates.
    :param subject: the subject, on one line.
    :param body: the plain-text body.
    :param html: an HTML alternative, or ``None``.
    :param message_id: a ``Message-ID`` derived from the event, the sender
        and the recipients, so that a copy sent twice is recognisably the same
        message to mail clients.
    :param event_id: the id of the event it is about.
    """

    sender: str
    recipients: list[str]
    subject: str
    body: str
    html: str | None
    message_id: str
    event_id: str


@dataclass(frozen=True)
class SmtpSettings:
    """Where a transport sends, and which config keys say so, for errors
    that tell the user what to change.

    :param host: the SMTP server's host name.
    :param port: its port.
    :param server_keys: the config keys naming the server.
    :param login_keys: the config keys holding the credentials.
    :param tls_keys: the config keys choosing TLS.
    """

    host: str
    port: int
    server_keys: str
    login_keys: str
    tls_keys: str

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"


@contextmanager
def smtp_errors(settings: SmtpSettings) -> Iterator[None]:
    """Turn what ``smtplib`` and the socket layer raise into a specific
    :class:`MailError` whose message names the config keys to check.

    A permanent ``5xx`` refusal becomes a
    :class:`~flask_notifications.errors.PermanentConsumerError` (the delivery
    is dead-lettered at once); a transient ``4xx`` one, an unreachable server
    or a certificate that cannot be verified are retried.

    :raises MailAuthenticationError: the login was refused (``5xx``) or not offered.
    :raises MailRejectedError: the sender, the recipients or the message was refused (``5xx``).
    :raises MailDeferredError: the server refused for now (``4xx``).
    :raises MailServerUnavailableError: the server cannot be reached, or its
        certificate cannot be verified.
    :raises MailError: any other SMTP failure.
    """
    server = settings.server
    try:
        yield
    except MailError:
        raise
    except smtplib.SMTPNotSupportedError as exc:
        raise MailAuthenticationError(
            f"The SMTP server {server} does not support what was asked ({exc}); it may offer AUTH only over "
            f"TLS ({settings.tls_keys}), or not at all (leave {settings.login_keys} empty).",
            server,
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        refused = ", ".join(f"{addr} ({code} {_text(msg)})" for addr, (code, msg) in sorted(exc.recipients.items()))
        if codes and all(_permanent(code) for code in codes):
            raise MailRejectedError(f"The SMTP server {server} refused every recipient: {refused}.", server) from exc
        raise MailDeferredError(
            f"The SMTP server {server} refused every recipient, some for now: {refused}.", server
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise _refusal(exc, settings) from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise MailServerUnavailableError(
            f"The SMTP server {server} dropped the connection ({exc}); check {settings.server_keys} "
            f"and {settings.tls_keys}.",
            server,
        ) from exc
    except smtplib.SMTPException as exc:
        raise MailError(f"Sending through the SMTP server {server} failed: {exc!r}.", server) from exc
    except ssl.SSLCertVerificationError as exc:
        raise MailServerUnavailableError(
            f"The certificate of the SMTP server {server} could not be verified ({exc.verify_message}), so "
            "nothing was sent. If it is the right server and its certificate is not signed by a CA this "
            "system trusts, give the consumer ssl_context=ssl.create_default_context(cafile=...) with the "
            "certificate or its CA.",
            server,
        ) from exc
    except OSError as exc:
        # Connection refused, unknown host, timeout, TLS handshake failure.
        raise MailServerUnavailableError(
            f"Could not reach the SMTP server {server}: {exc}. Check {settings.server_keys}, "
            f"{settings.tls_keys}, and that the server is running.",
            server,
        ) from exc


def _permanent(code: int) -> bool:
    # RFC 5321 4.2.1: 5yz is a permanent negative reply, 4yz a transient one.
    return 500 <= code <= 599


def _refusal(exc: smtplib.SMTPResponseException, settings: SmtpSettings) -> MailError:
    """The error of a reply that refused a command: permanent for ``5xx``."""
    server, reply, code = settings.server, _reply(exc), exc.smtp_code
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        what, hint = "refused the login", f"; check {settings.login_keys}"
    elif isinstance(exc, (smtplib.SMTPSenderRefused, smtplib.SMTPDataError)):
        what, hint = "refused the message", ""
    elif isinstance(exc, smtplib.SMTPConnectError):
        what, hint = "refused the connection", f"; check {settings.server_keys}"
    else:
        what, hint = "refused a command", ""
    if _permanent(code):
        error = MailAuthenticationError if isinstance(exc, smtplib.SMTPAuthenticationError) else MailRejectedError
        return error(f"The SMTP server {server} {what} ({reply}){hint}.", server)
    if code == 421 or isinstance(exc, smtplib.SMTPConnectError):
        return MailServerUnavailableError(f"The SMTP server {server} {what} ({reply}){hint}.", server)
    if 400 <= code <= 499:
        return MailDeferredError(f"The SMTP server {server} {what} for now ({reply}){hint}.", server)
    return MailError(f"The SMTP server {server} {what} with an unexpected reply ({reply}).", server)


def timeout_option(timeout: float | None) -> dict[str, Any]:
    """The ``timeout`` argument of ``smtplib.SMTP``; ``None`` leaves the
    socket blocking, as smtplib's default does."""
    return {} if timeout is None else {"timeout": float(timeout)}


def _one_line(text: str) -> str:
    # A header must not break lines: a title with newlines would otherwise
    # be refused (Flask-Mail) or inject headers.
    return " ".join(text.split())


def _address(value: str | tuple[str, str]) -> str:
    parts = value if isinstance(value, tuple) else (value,)
    if any("\r" in part or "\n" in part for part in parts):
        raise ConsumerError(f"The address {value!r} contains a line break.")
    if isinstance(value, tuple):
        try:
            return str(Address(display_name=value[0], addr_spec=value[1]))
        except (ValueError, MessageError) as exc:
            raise ConsumerError(f"Invalid address {value!r}: {exc}") from exc
    return value.strip()


def _domain(sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2]
    return domain or "localhost"


class MailConsumer(EventConsumer):
    """Base of the consumers that email events.

    Each event becomes one email to all its recipients. The subject and the
    bodies are Jinja templates rendered in the application (its filters and
    globals apply) with ``event`` (the :class:`Event`; ``event.title``,
    ``event.sender``, ``event.extra.priority``...) and ``recipients`` (the
    addresses). Give each part as template source (``subject=``,
    ``body=``, ``html=``) or as the name of a template of the application
    (``subject_template=``, ``body_template=``, ``html_template=``), not both.
    The subject is the event's title by default (``Event <event_id>`` if it
    has none) and the body the event's body; there is no HTML part unless one
    is given. HTML given as source is autoescaped.

    ``templates`` names a folder of the application's templates, found
    through Flask's loader, in which each part has a file: ``subject.txt``,
    ``body.txt``, ``body.html``, and for digests ``digest_subject.txt``,
    ``digest.txt``, ``digest.html``. ``{hub}`` in it is the label of the hub
    whose consumer runs, so ``templates=HUB_TEMPLATES``
    (``"notifications/{hub}"``) gives each hub its own. A part given as an
    argument wins over its file; a file that does not exist leaves the
    default. A digest (an event of type ``"digest"`` carrying the list
    ``events``; see :doc:`preferences`) is rendered with the digest parts,
    which see ``events`` too: ``digest_subject=``, ``digest_body=``,
    ``digest_html=`` as source, or the folder's files; by default its title
    (or "N notifications") and a list of every event once.

    :param sender: the ``From`` address, ``"Name <addr>"`` or ``(name, addr)``;
        ``None`` uses the transport's default sender setting.
    :param recipients: the addresses to send every event to; or a callable
        that maps each of the event's ``recipients`` (user ids, say) to an
        address, several addresses or ``None`` (skip it). An event that ends
        up with no address is not sent, and that is not an error.
    :param ssl_context: the :class:`ssl.SSLContext` of ``STARTTLS`` and of
        implicit TLS. ``None`` (the default) verifies the server's certificate
        and host name against the system's trusted CAs
        (:func:`ssl.create_default_context`); to trust a private CA or a
        self-signed server, pass ``ssl.create_default_context(cafile=...)``.
    :param templates: a folder of the application's templates, as above.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    :raises ConsumerError: a part is given twice, or no recipient is fixed.
    """

    #: Subject to the users' preferences for the ``email`` channel.
    channel: str | None = "email"

    #: The config key naming the default sender, for error messages.
    default_sender_key = ""

    def __init__(
        self,
        sender: str | tuple[str, str] | None = None,
        recipients: str | Iterable[str] | RecipientMap = (),
        *,
        subject: str | None = None,
        body: str | None = None,
        html: str | None = None,
        subject_template: str | None = None,
        body_template: str | None = None,
        html_template: str | None = None,
        templates: str | None = None,
        digest_subject: str | None = None,
        digest_body: str | None = None,
        digest_html: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ConsumerError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}.")
        self.ssl_context = ssl_context
        self.sender = _address(sender) if sender is not None else None
        self.recipient_map: RecipientMap | None = None
        self.recipients: tuple[str, ...] = ()
        if isinstance(recipients, str):
            self.recipients = (_address(recipients),)
        elif callable(recipients):
            self.recipient_map = recipients
        else:
            self.recipients = tuple(_unique(_address(addr) for addr in recipients))
            if not self.recipients:
                raise ConsumerError(
                    f"{type(self).__name__} needs recipients: a list of addresses, or a callable that maps "
                    "the event's recipients to addresses."
                )
        parts = {
            "subject": explicit("subject", subject, subject_template),
            "body": explicit("body", body, body_template),
            "html": explicit("html", html, html_template),
            "digest_subject": explicit("digest_subject", digest_subject, None),
            "digest_body": explicit("digest_body", digest_body, None),
            "digest_html": explicit("digest_html", digest_html, None),
        }
        self.templates = MailTemplates(parts, templates)

    @classmethod
    def from_app(
        cls,
        app: Flask,
        sender: str | tuple[str, str] | None = None,
        recipients: str | Iterable[str] | RecipientMap = (),
        **options: Any,
    ) -> Self:
        """Build a consumer that sends with ``app``'s settings, checking them
        now rather than in the worker. ``options`` are those of the
        constructor.

        :raises ConfigurationError: the settings contradict each other, or
            there is neither ``sender`` nor a default sender setting.
        :raises ConsumerError: no recipient, or a template given twice.
        """
        # The subclasses' constructors take the transport first:
        # ``(mail, sender, recipients, **options)``.
        build: Callable[..., Self] = cls
        consumer = build(cls._transport_of(app), sender, recipients, **options)
        # The check compose() makes for every event, made once here.
        if consumer.sender is None and not consumer.get_sender():
            raise ConfigurationError(
                f"{cls.__name__} has no sender: pass one to from_app(), or set {cls.default_sender_key}."
            )
        return consumer

    @classmethod
    def _transport_of(cls, app: Flask) -> Any:
        """What :meth:`from_app` passes the constructor as its first
        argument, the transport of ``app``; set up and checked here.

        :raises ConfigurationError: the settings contradict each other.
        """
        raise NotImplementedError(f"{cls.__name__} must implement _transport_of() to be built with from_app().")

    # -- what is sent ---------------------------------------------------------

    def addresses(self, event: Event) -> list[str]:
        """The addresses ``event`` is sent to, without duplicates."""
        if self.recipient_map is None:
            return list(self.recipients)
        found: list[str] = []
        for recipient in event["recipients"]:
            mapped = self.recipient_map(recipient)
            if mapped is None:
                continue
            found.extend([mapped] if isinstance(mapped, str) else mapped)
        return _unique(_address(addr) for addr in found if addr)

    def get_sender(self) -> str | None:
        """The transport's default sender, used when none was given."""
        return None

    def render(self, part: str, event: Event, addresses: list[str]) -> str | None:
        """Render ``part`` (``"subject"``, ``"body"`` or ``"html"``) of the
        email for ``event``, or of the digest if ``event`` is one; ``None``
        when the part is not wanted."""
        return self.templates.render(part, event, addresses)

    def compose(self, event: Event) -> MailContent | None:
        """The email for ``event``, or ``None`` when it has no recipient.

        :raises ConfigurationError: there is no sender.
        """
        addresses = self.addresses(event)
        if not addresses:
            return None
        sender = self.sender or self.get_sender()
        if not sender:
            raise ConfigurationError(
                f"{type(self).__name__} has no sender: pass sender=..., or set {self.default_sender_key}."
            )
        sender = _address(sender)
        subject = _one_line(self.render("subject", event, addresses) or "") or f"Event {event['event_id']}"
        body = self.render("body", event, addresses) or ""
        html = self.render("html", event, addresses)
        digest = hashlib.sha256("\n".join([event["event_id"], sender, *addresses]).encode("utf-8")).hexdigest()
        return MailContent(
            sender=sender,
            recipients=addresses,
            subject=subject,
            body=body,
            html=html,
            message_id=f"<{digest[:32]}.notification@{_domain(sender)}>",
            event_id=event["event_id"],
        )

    # -- how it is sent -------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext:
        """The context TLS connections to the SMTP server use: ``ssl_context``
        if one was given, else one that verifies the certificate and the host
        name against the system's trusted CAs."""
        return self.ssl_context if self.ssl_context is not None else ssl.create_default_context()

    @abstractmethod
    def settings(self) -> SmtpSettings:
        """Where the transport sends, for error messages."""

    @abstractmethod
    def deliver(self, content: MailContent) -> None:
        """Hand ``content`` to the SMTP server; ``smtplib`` errors propagate."""

    def consume(self, event: Event | str) -> None:
        """Email ``event``, an :class:`Event` or its JSON.

        :raises MailError: a subclass says what failed; the task is retried,
            unless the server refused for good (a
            :class:`~flask_notifications.errors.PermanentConsumerError`).
        :raises ConfigurationError: there is no sender.
        """
        event = as_event(event)
        content = self.compose(event)
        if content is None:
            logger.info("%r: event %s has no recipient address; no email sent.", self, event["event_id"])
            return
        settings = self.settings()
        with smtp_errors(settings):
            self.deliver(content)
        logger.debug("%r: emailed event %s to %d recipient(s).", self, event["event_id"], len(content.recipients))


def _unique(addresses: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(addr for addr in addresses if addr))
