"""Apprise: each event to Slack, Discord, Telegram, Matrix, Teams, ntfy,
Gotify, SMS gateways, mail, webhooks and the other services Apprise's URLs
name. Needs the ``apprise`` extra; see :doc:`channels`.

Target URLs carry secrets (tokens, passwords, webhook paths): this module
names a target by :func:`redact` only, in its messages, its errors (so in
dead letters) and in what Apprise logs while it notifies.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
from flask import current_app

with warnings.catch_warnings():
    # Apprise's mail plugin imports imghdr (for PGPy), deprecated before
    # Python 3.13 removed it; importing it here keeps the warning out of the
    # first notification, where an application's warning filters would see it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import apprise.utils.pgp  # noqa: F401

from ..errors import AppriseTargetError, AppriseUnavailableError, ConsumerError
from ..event import Event, as_event
from ..state import current_notifications
from ..worker.delivery import current_delivery
from ..worker.parts import DeliveryParts
from .consumer import EventConsumer

logger = logging.getLogger(__name__)

#: What ``lookup=`` takes: a recipient id, and returns that user's target URLs.
LookupFunction = Callable[[str], Iterable[str]]
#: What ``message=`` takes: an event, and returns its ``(title, body)``.
MessageFunction = Callable[[Event], tuple[str, str]]

#: HTTP statuses that are worth trying again; every other 4xx is not.
_TRANSIENT = frozenset({408, 425, 429})
_STATUS = re.compile(r"\berror=(\d{3})\b")

# The secrets of the targets being notified in this context, scrubbed from
# every record Apprise logs meanwhile; and where those records are kept.
_secrets: ContextVar[tuple[str, ...]] = ContextVar("flask_notifications_apprise_secrets", default=())
_captured: ContextVar[list[str] | None] = ContextVar("flask_notifications_apprise_captured", default=None)
_installed = threading.Lock()


def _written_host(url: str) -> str:
    """The host and port of ``url`` as written (after any ``user@``)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def _masked_host(url: str) -> str | None:
    """The host of ``url`` as Apprise's privacy URL shows it, when Apprise
    masks it: some services take a token where a host would be
    (``prowl://APIKEY``, ``pover://USER@TOKEN``, ``tgram://BOT:TOKEN/CHAT``);
    ``…`` for a URL Apprise cannot read; ``None`` when the host is a host."""
    _install()
    with _scrubbed_only(url):
        try:
            plugin = apprise.Apprise.instantiate(url)
            private = plugin.url(privacy=True) if plugin else None  # type: ignore[no-untyped-call]
        except Exception:  # noqa: BLE001 - a URL Apprise cannot read shows no host at all
            return "…"
    if not isinstance(private, str):
        # A URL Apprise cannot read (a misspelt scheme, say): what stands
        # where its host would be may be a token.
        return "…"
    shown = urlsplit(private).netloc.rpartition("@")[2]
    return shown if shown.lower() != _written_host(url).lower() else None


def redact(url: str) -> str:
    """``url`` without its secrets: scheme, host and port, and ``/…`` for a
    path; no user, password, path or query. A token Apprise's URL takes in
    place of a host is shown masked, as Apprise's privacy URL shows it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    host = _masked_host(url)
    if host is None:
        try:
            host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        except ValueError:
            return "<unreadable URL>"
    path = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{path}"


def secrets_of(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that may be secret: user, password, path
    segments and query values, as written and unquoted (short ones are left,
    they would scrub every word)."""
    try:
        parts = urlsplit(url)
        found = [parts.username or "", parts.password or "", *parts.path.split("/")]
        found += [value for _, value in parse_qsl(parts.query)]
        if _masked_host(url) is not None:
            # A token where the host would be: all of it, and each piece.
            written = _written_host(url)
            found += [written, *written.split(":")]
    except ValueError:
        return (url,)
    every = {url, *found, *(unquote(item) for item in found)}
    return tuple(sorted((item for item in every if len(item) >= 4), key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``****``."""
    for secret in secrets:
        text = text.replace(secret, "****")
    return text


class _Scrubber(logging.Filter):
    """On Apprise's logger: scrub the secrets of the targets notified in
    the record's context, and keep the record for the consumer."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _secrets.get()
        if secrets:
            record.msg, record.args = scrub(record.getMessage(), secrets), None
        kept = _captured.get()
        if kept is not None and record.levelno >= logging.WARNING:
            kept.append(record.getMessage())
        return True


def _install() -> None:
    # urllib3 logs each request's path at DEBUG, and a whole URL when a
    # response's headers are malformed (WARNING): webhook tokens live there.
    # A filter acts on its own logger's records only, so each one is named.
    with _installed:
        for name in (
            apprise.LOGGER_NAME,
            "urllib3.connectionpool",
            "urllib3.connection",
            "urllib3.poolmanager",
            "urllib3.util.retry",
        ):
            target = logging.getLogger(name)
            if not any(isinstance(f, _Scrubber) for f in target.filters):
                target.addFilter(_Scrubber())


@contextmanager
def _scrubbed_only(url: str) -> Iterator[None]:
    """Scrub ``url``'s secrets from what Apprise logs meanwhile, keeping
    nothing (the caller reports its own errors)."""
    if _secrets.get():
        yield
        return
    every = {url, _written_host(url), *_written_host(url).split(":")}
    token = _secrets.set(tuple(sorted((s for s in every if len(s) >= 4), key=len, reverse=True)))
    try:
        yield
    finally:
        _secrets.reset(token)


@contextmanager
def _scrubbed(url: str) -> Iterator[list[str]]:
    kept: list[str] = []
    secrets, captured = _secrets.set(secrets_of(url)), _captured.set(kept)
    try:
        yield kept
    finally:
        _secrets.reset(secrets)
        _captured.reset(captured)


def default_message(event: Event) -> tuple[str, str]:
    """An event's ``(title, body)``; an empty body is the title."""
    return event["title"], event["body"] or event["title"]


class AppriseConsumer(EventConsumer):
    """Notify each event through Apprise's URLs::

        hub.register_consumer(AppriseConsumer(["slack://T000/B000/XXXX"]))
        hub.register_consumer(AppriseConsumer(lookup=lambda user: users[user].apprise_urls))

    An event goes to the union of three lists of target URLs: ``targets``;
    the URLs ``NOTIFICATIONS_APPRISE_TARGETS`` gives the hub (by label or
    id); and, with ``lookup``, each recipient's URLs.

    Each target is notified once per delivery: a retry or a redelivered
    task notifies only the targets still to do. A failure is sorted by
    what Apprise reports:

    - a URL Apprise does not understand, or an HTTP ``4xx`` other than
      ``408``, ``425`` and ``429``:
      :class:`~flask_notifications.errors.AppriseTargetError`, dead-lettered at once;
    - anything else (no connection, a timeout, ``429``, ``5xx``, an SMTP
      error): :class:`~flask_notifications.errors.AppriseUnavailableError`,
      retried, and dead-lettered after ``NOTIFICATIONS_MAX_RETRIES``.

    :param targets: Apprise URLs every event goes to.
    :param lookup: a function of a recipient id returning that user's URLs.
    :param message: a function of the event returning ``(title, body)``;
        by default :func:`default_message`.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    """

    #: Subject to the users' preferences for the ``apprise`` channel.
    channel: str | None = "apprise"

    def __init__(
        self,
        targets: Iterable[str] = (),
        *,
        lookup: LookupFunction | None = None,
        message: MessageFunction | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if isinstance(targets, str):
            raise ConsumerError("AppriseConsumer takes a list of target URLs, not one string.")
        for option, value in (("lookup", lookup), ("message", message)):
            if value is not None and not callable(value):
                raise ConsumerError(f"AppriseConsumer's {option}= takes a function, not {type(value).__name__}.")
        self.targets = list(targets)
        self.lookup = lookup
        self.message = message or default_message

    def targets_of(self, event: Event) -> list[str]:
        """The URLs ``event`` goes to, each once."""
        found = list(self.targets)
        delivery = current_delivery()
        if delivery is not None:
            configured = current_app.config.get("NOTIFICATIONS_APPRISE_TARGETS") or {}
            hub = current_notifications.hubs.get(delivery.hub_id)
            for key in (delivery.hub_id, hub.label if hub is not None else None):
                found.extend(configured.get(key, ()) if key is not None else ())
        if self.lookup is not None:
            for recipient in event["recipients"]:
                urls = self.lookup(recipient)
                if isinstance(urls, str):
                    raise TypeError("The lookup function returned a string; return a list of URLs.")
                found.extend(urls or ())
        return list(dict.fromkeys(found))

    def consume(self, event: Event | str) -> None:
        """Notify every target of ``event``.

        :raises AppriseUnavailableError: some targets failed for now; the
            others were notified. Retried.
        :raises AppriseTargetError: some targets refused it for good.
        """
        event = as_event(event)
        _install()
        title, body = self.message(event)
        targets = self.targets_of(event)
        parts = DeliveryParts.current()
        later: list[AppriseUnavailableError] = []
        refused: list[AppriseTargetError] = []
        for url in targets:
            # Claim keys live in the backend: they name a target by digest.
            digest = hashlib.sha256(url.encode()).hexdigest()[:32]
            try:
                with parts.part(digest) as todo:
                    if todo:
                        self.notify(url, title, body)
            except AppriseUnavailableError as exc:
                later.append(exc)
            except AppriseTargetError as exc:
                refused.append(exc)
        if later:
            raise AppriseUnavailableError(
                f"{len(later)} of {len(targets)} targets failed for now and will be retried: "
                + "; ".join(str(exc) for exc in later[:5])
            )
        if refused:
            raise AppriseTargetError(
                f"{len(refused)} of {len(targets)} targets refused the notification: "
                + "; ".join(str(exc) for exc in refused[:5])
            )

    def notify(self, url: str, title: str, body: str) -> None:
        """Notify one target.

        :raises AppriseTargetError: the URL is not understood, or the target
            refused for good.
        :raises AppriseUnavailableError: any other failure.
        """
        shown = redact(url)
        with _scrubbed(url) as kept:
            notifier = apprise.Apprise()
            if not notifier.add(url):
                raise AppriseTargetError(f"{shown}: not a URL Apprise understands")
            result: Any = notifier.notify(body=body, title=title)
        if result:
            return
        said = "; ".join(kept[-3:]) or "no reason given"
        statuses = [int(status) for status in _STATUS.findall(said)]
        if statuses and all(400 <= s < 500 and s not in _TRANSIENT for s in statuses):
            raise AppriseTargetError(f"{shown} refused it: {said}")
        raise AppriseUnavailableError(f"{shown} failed: {said}")

    def __repr__(self) -> str:
        return f"<AppriseConsumer {self.name!r} to {len(self.targets)} targets>"
