"""Exceptions raised by Flask-Notifications.

Every error derives from :class:`NotificationsError`, so an application can
catch everything this extension raises with one ``except`` clause.
"""

from __future__ import annotations

from collections.abc import Sequence


class NotificationsError(Exception):
    """Root of every error raised by Flask-Notifications."""


class InvalidEventError(NotificationsError, ValueError):
    """An event is malformed: a field has the wrong type, the JSON cannot be
    parsed, or the event is larger than ``NOTIFICATIONS_MAX_EVENT_SIZE``.

    :param message: what is wrong and how to fix it.
    :param field: the name of the offending field, when there is one.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigurationError(NotificationsError):
    """The configuration names something that does not exist or cannot work."""


class HubError(NotificationsError):
    """A hub label is invalid, or a hub id is unknown."""


class ConsumerError(NotificationsError):
    """A consumer cannot be registered, or a consumer failed to deliver."""


class PermanentConsumerError(ConsumerError):
    """A consumer failed in a way that trying again cannot mend: the server
    refused the message for good, or the event can never be delivered.

    Raise it (or a subclass) from ``consume()`` and the delivery becomes a
    dead letter at once, without spending the rest of
    ``NOTIFICATIONS_MAX_RETRIES``; the letter's ``error`` is this exception.
    Every other exception is retried. Chain the cause
    (``raise PermanentConsumerError("...") from exc``) to keep it in the
    letter's traceback.
    """


class BrokerUnavailableError(NotificationsError):
    """The Celery broker cannot be reached, so nothing was enqueued."""


class BackendError(NotificationsError):
    """The pub/sub backend failed: it is unreachable or answered an error."""


class LedgerUnavailableError(BackendError):
    """The ledger could not be reached, or refused a write before making
    it: nothing was written. A ledger raises it where it can tell; a plain
    :class:`BackendError` from a write means that the write may have been
    made (its reply was lost)."""


class OutboxUnavailableError(BrokerUnavailableError, BackendError):
    """:meth:`Notifications.send` or :meth:`Notifications.send_many` could
    not record its events in the outbox (the ledger cannot be reached), so
    nothing would deliver them if the broker lost their message. The call
    raises rather than return a promise it cannot keep.

    It is a :class:`BrokerUnavailableError`, as the send did not go
    through (with the ledger on the broker's Redis, the default, a Redis
    outage shows as this error), and a :class:`BackendError`, as the ledger
    failed: code that catches either catches it. Unlike other broker
    errors, it may come after the message went out: see ``may_be_delivered``.

    :param message: what failed.
    :param may_be_delivered: ``False`` when nothing was enqueued and nothing
        recorded: send again once the ledger answers. ``True`` when their
        message was handed to the broker while the record failed: they are
        delivered unless the broker loses it, and sending them again may
        deliver them twice. (A broker that refused the message raises a
        plain :class:`BrokerUnavailableError`, even when the record may
        stay: sending again then never loses the events.)
    :param delivery_ids: the delivery ids the events would have had, the
        ones a consumer's :func:`~flask_notifications.worker.delivery.current_delivery`
        shows if they are delivered.
    """

    def __init__(self, message: str, *, may_be_delivered: bool, delivery_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.may_be_delivered = may_be_delivered
        self.delivery_ids = tuple(delivery_ids)


class SendInProgressError(NotificationsError):
    """Another :meth:`Notifications.send` with the same ``idempotency_key``
    is still enqueueing its event, and did not finish within
    ``NOTIFICATIONS_SEND_CLAIM_TIMEOUT`` seconds. Nothing was enqueued by
    this call; try again later, when the other send has either been
    recorded (a duplicate) or failed (the key is free again).

    :param key: the idempotency key.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class LogWriteError(ConsumerError):
    """A :class:`LogConsumer` could not append to its log file: the directory
    does not exist, the file is not writable, or the disk is full.

    :param message: what failed and how to fix it.
    :param path: the log file.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class MailError(ConsumerError):
    """A mail consumer could not deliver an email.

    :param message: what failed and how to fix it.
    :param server: the SMTP server, as ``host:port``, when known.
    """

    def __init__(self, message: str, server: str | None = None) -> None:
        super().__init__(message)
        self.server = server


class MailServerUnavailableError(MailError):
    """The SMTP server cannot be reached: nothing listens on its port, the
    connection timed out or dropped, the TLS handshake failed (its
    certificate could not be verified, say), or it answered ``421``. The
    task is retried."""


class MailDeferredError(MailError):
    """The SMTP server refused for now, with a transient ``4xx`` reply
    (greylisting, a full mailbox, a rate limit, a temporary authentication
    failure). The task is retried."""


class MailAuthenticationError(MailError, PermanentConsumerError):
    """The SMTP server refused the login with a permanent ``5xx`` reply, or
    does not offer authentication on this connection (it may require
    ``STARTTLS`` first). Retrying with the same credentials cannot succeed
    (and repeated failed logins may lock the account), so the delivery is
    dead-lettered at once."""


class MailRejectedError(MailError, PermanentConsumerError):
    """The SMTP server refused the sender, every recipient, or the message,
    with a permanent ``5xx`` reply, so the delivery is dead-lettered at once."""


class StreamFormatError(NotificationsError, ValueError):
    """A value cannot be written as a server-sent events field: an event
    name, id or retry holds a control character (such as CR, LF or NUL) that
    would end the field early or that browsers drop, or a retry is not a
    non-negative integer."""


class TooManyStreamsError(NotificationsError):
    """A client address already holds the allowed number of open streams.

    :param client: the address.
    :param limit: the limit (``NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT``).
    """

    def __init__(self, client: str, limit: int) -> None:
        super().__init__(
            f"{client or 'This client'} already has {limit} open event streams, the limit set by "
            "NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT. Close one first; behind a reverse proxy, "
            "apply werkzeug's ProxyFix so that clients are told apart."
        )
        self.client = client
        self.limit = limit


class InboxError(NotificationsError):
    """The notification inbox cannot do what was asked."""


class InvalidInboxRequestError(InboxError, ValueError):
    """An inbox call got bad input: an id that is not a positive integer,
    too many ids, a limit out of range, or a recipient that is not a
    non-empty string."""


class InvalidCursorError(InvalidInboxRequestError):
    """A pagination cursor is not one that :meth:`Inbox.list` returned."""


class InboxDataError(InvalidInboxRequestError, PermanentConsumerError):
    """The inbox database refused what was to be stored (a value its column
    types cannot hold). Trying again cannot mend it, so a consumer that
    raises it becomes a dead letter at once."""


class NotificationNotFoundError(InboxError, LookupError):
    """Some ids are not in the user's inbox: they do not exist, or they are
    another user's (the two are not told apart). Nothing was changed.

    :param ids: the ids that were not found, in ascending order.
    """

    def __init__(self, ids: list[int]) -> None:
        shown = ", ".join(str(i) for i in ids[:20]) + (", ..." if len(ids) > 20 else "")
        super().__init__(f"No notification {shown} in this user's inbox; nothing was changed.")
        self.ids = ids


class InboxUnavailableError(InboxError):
    """The inbox database cannot be reached, or its table does not exist.
    A consumer that raises it is retried; nothing is lost."""


class ConfigurationWarning(UserWarning):
    """A configuration key looks wrong but the application can still run,
    such as an unknown ``NOTIFICATIONS_*`` key, probably misspelt. Filter it
    with ``warnings.filterwarnings("ignore", category=ConfigurationWarning)``
    to silence it."""


class RetryLaterError(ConsumerError):
    """A consumer failed for now, and the other side said when to try again
    (an HTTP ``Retry-After``). The delivery is retried as any failure is,
    but not sooner than ``retry_after`` seconds (capped at
    ``NOTIFICATIONS_RETRY_BACKOFF_MAX``).

    :param message: what failed.
    :param retry_after: seconds to wait at least, or ``None`` for the usual backoff.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WebPushError(ConsumerError):
    """A :class:`~flask_notifications.consumers.webpush_consumer.WebPushConsumer`
    could not push an event, or a push subscription is invalid."""


class InvalidPushSubscriptionError(WebPushError, ValueError):
    """A push subscription (what the browser's ``PushManager.subscribe()``
    returned) is malformed, or its endpoint is not an allowed push service
    (``NOTIFICATIONS_WEBPUSH_ENDPOINTS``)."""


class PushPayloadTooLargeError(WebPushError, PermanentConsumerError):
    """The push message is larger than a push service must accept (4 KB
    encrypted) even after its title and body were trimmed: the url or the
    extra data alone are too large. Dead-lettered at once."""


class PushRejectedError(WebPushError, PermanentConsumerError):
    """A push service refused a message for good (``400``, ``401``, ``403``,
    ``413``...): the VAPID keys do not match the subscription, or the message
    is malformed. Dead-lettered at once; the devices that got the push are
    not pushed to again when the letter is retried."""


class PushServiceUnavailableError(WebPushError, RetryLaterError):
    """A push service answered ``429`` or ``5xx``, or could not be reached.
    Retried, not before its ``Retry-After``; the devices that got the push
    are not pushed to again."""


class AppriseError(ConsumerError):
    """An :class:`~flask_notifications.consumers.apprise_consumer.AppriseConsumer`
    could not notify a target. Messages name targets by their redacted URL."""


class AppriseTargetError(AppriseError, PermanentConsumerError):
    """A target refused the notification for good (an HTTP ``4xx`` other
    than ``408`` and ``429``, or a ``5xx`` SMTP reply), or its URL is not one
    Apprise understands. Dead-lettered at once."""


class AppriseUnavailableError(AppriseError, RetryLaterError):
    """A target could not be reached, timed out, or answered ``429`` or
    ``5xx``. Retried; the targets that were notified are not notified again."""


class PreferencesError(NotificationsError):
    """The notification preferences cannot do what was asked."""


class InvalidPreferenceError(PreferencesError, ValueError):
    """A preference names a hub or a channel that does not exist, or its value
    is not ``true`` or ``false``; nothing was changed."""


class RequiredPreferenceError(InvalidPreferenceError):
    """A preference would opt a user out of a channel of a hub marked
    required (security alerts, say), which nobody can opt out of; nothing was
    changed."""


class PreferencesUnavailableError(PreferencesError, BackendError):
    """The preferences database cannot be reached, or its table does not
    exist. A consumer task that needs a preference then waits and runs again,
    as when the ledger is unreachable: its delivery is neither dropped nor
    dead-lettered."""
