"""The pub/sub backend interface, and how a backend is chosen.

A backend is the transport: it carries events from the workers
(:class:`PushConsumer`) to the processes that serve SSE streams, and keeps
the replay history of every hub. Claims, idempotency keys and dead letters
are the ledger's (:mod:`flask_notifications.ledger`).

Message ids are strings of the form ``"<int>-<int>"`` that grow strictly within
a channel, as Redis stream ids do, so that a client's ``Last-Event-ID`` can be
compared with the history.
"""

from __future__ import annotations

import functools
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigurationError
from ..ledger.base import SEND_KEY_PREFIX, Claim
from ..resolve import resolve

if TYPE_CHECKING:
    from ..ledger.base import Ledger

__all__ = [
    "ALIASES",
    "SEND_KEY_PREFIX",
    "Backend",
    "Claim",
    "History",
    "Lost",
    "Message",
    "MessageIds",
    "Subscription",
    "build_backend",
    "parse_id",
    "resolve_backend",
    "takes_dedupe_key",
]

#: Aliases accepted wherever a backend is named.
ALIASES: dict[str, str] = {
    "redis": "flask_notifications.backends.redis.RedisPubSub",
    "memory": "flask_notifications.backends.memory.MemoryPubSub",
    "amqp": "flask_notifications.backends.amqp.AmqpPubSub",
}


@dataclass(frozen=True)
class Message:
    """One published event, as a backend delivers it.

    :param channel: the hub id it was published to.
    :param id: its id in that channel, ``"<int>-<int>"``.
    :param data: the event's JSON.
    """

    channel: str
    id: str
    data: str

    @property
    def sort_key(self) -> tuple[int, int]:
        """The id as a tuple that orders messages of one channel."""
        return parse_id(self.id)


def parse_id(message_id: str) -> tuple[int, int]:
    """Parse a message id into its sortable form.

    :raises ValueError: the id is not of the form ``"<int>-<int>"``.
    """
    head, sep, tail = message_id.partition("-")
    if not sep or not head.isdigit() or not tail.isdigit() or len(message_id) > 41:
        raise ValueError(f"Not a message id: {message_id[:48]!r}.")
    return int(head), int(tail)


class MessageIds:
    """Makes message ids for backends that have no server to assign them:
    ``"<ms>-<seq>"``, the wall clock in milliseconds and a sequence that
    breaks ties, strictly increasing per channel within this object.
    Callers serialise access (the backends call it under their lock)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def next(self, channel: str) -> str:
        """The next id of ``channel``."""
        now_ms = int(time.time() * 1000)
        last_ms, last_seq = self._last.get(channel, (0, 0))
        new = (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)
        self._last[channel] = new
        return f"{new[0]}-{new[1]}"


@dataclass(frozen=True)
class History:
    """What a backend can replay after an id.

    :param messages: the messages after the id, oldest first.
    :param gap: ``True`` when messages after the id were trimmed from the
        history (or the backend keeps none), so the reader missed some.
    :param reason: why, when ``gap``: ``"trimmed"``, or ``"failover"`` (the
        id predates a failover, which may have lost the writes that followed
        it), as :class:`Lost` names it.
    """

    messages: list[Message] = field(default_factory=list)
    gap: bool = False
    reason: str = "trimmed"


@dataclass(frozen=True)
class Lost:
    """Live messages of ``channel`` a subscription could not deliver: those
    after ``after_id`` (the last it delivered, or ``"0-0"``) and before the
    next message it returns.

    :param channel: the channel.
    :param after_id: the last id delivered before the loss.
    :param reason: ``"overrun"`` (the history was trimmed past the reader),
        ``"reset"`` (the channel's ids went backwards or it vanished: a
        server restarted empty, or the channel was deleted), ``"failover"``
        (the server is a replica promoted after its master failed, which may
        not have replicated the last writes), or ``"outage"``
        (the backend cannot tell what it dropped while unreachable).
    """

    channel: str
    after_id: str
    reason: str


class Subscription(ABC):
    """Live messages of a changing set of channels, over one connection."""

    #: Whether :meth:`lost` reports every live message this subscription
    #: failed to deliver. When it does not, a reader that went through an
    #: outage asks :meth:`Backend.history` instead.
    tracks_losses: ClassVar[bool] = False

    @property
    def connected(self) -> bool:
        """Whether the last attempt to reach the server succeeded; ``False``
        from a failure until a read succeeds again."""
        return True

    def lost(self) -> list[Lost]:
        """The losses found by the last :meth:`get`, which happened before
        the messages it returned: every one when :attr:`tracks_losses`,
        else those the subscription could tell (the fan-out announces them
        either way)."""
        return []

    @abstractmethod
    def add(self, channel: str) -> None:
        """Start receiving ``channel``; messages published after this returns
        arrive. Thread-safe: it may be called while another thread is blocked
        in :meth:`get`.

        :raises BackendError: the server cannot be reached.
        """

    @abstractmethod
    def remove(self, channel: str) -> None:
        """Stop receiving ``channel``."""

    @abstractmethod
    def get(self, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` seconds and return the messages that arrived.

        After a failure it first waits out the backoff (at most ``timeout``
        per call) and returns ``[]`` if that is not over yet.

        :raises BackendError: the server is unreachable; the caller may call
            again, and the subscription resumes where it stopped if it can.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Idempotent; a :meth:`get` blocked in
        another thread returns ``[]``, and so does every later one."""


class Backend(ABC):
    """Base class of pub/sub backends.

    A subclass is built with :meth:`from_config` from the Flask config, so a
    worker that imports the application builds the same backend.
    """

    #: The short name accepted in ``NOTIFICATIONS_BACKEND``.
    alias: ClassVar[str] = ""
    #: Whether :meth:`publish` takes ``dedupe_key``. A backend written
    #: before it existed does not, and is called without it; so is a
    #: subclass whose ``publish`` override does not take it
    #: (:func:`takes_dedupe_key`).
    dedupes: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_config(cls, config: Mapping[str, Any], broker: Any = None) -> Backend:
        """Build the backend from a Flask config.

        :param config: the application's config, defaults applied.
        :param broker: the ``broker`` given to :meth:`Notifications.init_app`,
            such as a Redis client, or ``None``.
        """

    # -- pub/sub --------------------------------------------------------------

    @abstractmethod
    def publish(self, channel: str, data: str, *, dedupe_key: str | None = None) -> Message:
        """Publish ``data`` to every subscriber of ``channel`` and record it in
        the history.

        :param dedupe_key: a key of this publication (the delivery id and
            consumer, from :class:`PushConsumer`): a second publish with
            the same key to the same channel within the history window
            publishes nothing and returns the first one's message. How far
            a backend honours it is its own (:attr:`dedupes`; the Redis
            backend across processes and failovers, the others within one
            process).
        :raises BackendError: it could not be published.
        """

    def publish_many(self, channel: str, items: Sequence[str]) -> list[Message]:
        """Publish each of ``items`` to ``channel``, in order, as
        :meth:`publish` does; backends may do it in fewer round trips.

        :raises BackendError: they could not all be published.
        """
        return [self.publish(channel, data) for data in items]

    @abstractmethod
    def subscribe(self) -> Subscription:
        """Open a subscription with no channels yet."""

    @abstractmethod
    def history(self, channel: str, after_id: str | None, limit: int | None = None) -> History:
        """The messages of ``channel`` after ``after_id``; ``None`` gives all
        that are kept.

        :param limit: return at most this many, the oldest first; the
            reader asks again after the last one for the next page.
        """

    def last_id(self, channel: str) -> str | None:
        """The newest id of ``channel``, or ``None`` when it has none (or
        the backend keeps no history). Reads one message, not the history."""
        messages = self.history(channel, None).messages
        return messages[-1].id if messages else None

    def own_ledger(self, config: Mapping[str, Any]) -> Ledger | None:
        """The ledger that goes with this transport when none is configured
        (``NOTIFICATIONS_LEDGER`` and ``NOTIFICATIONS_LEDGER_URL`` unset):
        the Redis backend's server, the memory backend's process. ``None``
        lets :func:`~flask_notifications.ledger.choice.build_ledger` choose.

        :param config: the application's config, defaults applied.
        """
        return None

    # -- lifecycle ------------------------------------------------------------

    def ping(self) -> bool:
        """Whether the server answers. In-process backends always do."""
        return True

    def close(self) -> None:
        """Release connections. Idempotent."""
        return None


@functools.cache
def _publish_takes_dedupe_key(cls: type[Backend]) -> bool:
    try:
        parameters = inspect.signature(cls.publish).parameters
    except (TypeError, ValueError):
        return False
    return "dedupe_key" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def takes_dedupe_key(backend: Backend) -> bool:
    """Whether ``backend.publish`` honours ``dedupe_key``: its class says it
    does (:attr:`Backend.dedupes`) and its ``publish``, which a subclass
    written before may override, takes it."""
    return type(backend).dedupes and _publish_takes_dedupe_key(type(backend))


def resolve_backend(spec: object) -> type[Backend] | Backend:
    """Turn a backend setting into a class or an instance.

    ``spec`` may be a :class:`Backend` subclass, an instance, an alias from
    :data:`ALIASES`, or a dotted path (``"a.b.C"`` or ``"a.b:C"``).

    :raises ConfigurationError: nothing importable is named, or it is not a
        backend. The message lists the valid choices.
    """
    return resolve(spec, Backend, ALIASES, "backend", explain=_explain)  # type: ignore[type-abstract]


def _explain(spec: str, found: object) -> None:
    if isinstance(found, type) and _is_01_backend(found):
        missing = ", ".join(sorted(Backend.__abstractmethods__))
        raise ConfigurationError(
            f"{spec!r} is a Flask-Notifications 0.1 backend (publish, subscribe, listen). Port it: subclass "
            f"flask_notifications.backends.base.Backend and implement {missing}, as docs/migrating.rst "
            "shows, or use the 'redis', 'memory' or 'amqp' backend."
        )


def _is_01_backend(cls: type) -> bool:
    return all(callable(getattr(cls, name, None)) for name in ("publish", "subscribe", "listen"))


def build_backend(spec: object, config: Mapping[str, Any], broker: Any = None) -> Backend:
    """Resolve ``spec`` and build the backend from ``config`` if it is a class."""
    found = resolve_backend(spec)
    if isinstance(found, Backend):
        return found
    return found.from_config(config, broker)
