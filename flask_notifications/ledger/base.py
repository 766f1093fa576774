"""The ledger interface (how a ledger is chosen: :mod:`.choice`).

The ledger keeps what the worker stage shares between processes: the claims
that make a redelivered task skip an effect it had already (a consumer's run,
a ``send(idempotency_key=...)``), and the dead letters. The transport
(:class:`~flask_notifications.backends.base.Backend`) only carries events.

A claim is owned: whoever takes it passes a ``token`` of its own (a random
string), and only that token may extend, complete or release it, so an
owner that outlived its claim cannot undo the next owner's.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import BackendError, LedgerUnavailableError

if TYPE_CHECKING:
    from flask import Flask

    from ..backends.base import Backend

#: Prefix of the claim keys that record a caller's own sends
#: (``send(idempotency_key=...)``). Their promise lasts their whole TTL, so a
#: ledger bounded by size never evicts them before they expire.
SEND_KEY_PREFIX = "send:"


def _nothing() -> None:
    return None


def _raising(exc: BaseException) -> Callable[[], None]:
    """A call that raises ``exc``: the wait of a write that failed on its way."""

    def wait() -> None:
        raise exc

    return wait


class Claim(enum.Enum):
    """Outcome of :meth:`Ledger.claim`."""

    #: The caller holds the claim and must ``complete`` or ``release`` it.
    ACQUIRED = "acquired"
    #: The work was done already; skip it.
    DONE = "done"
    #: Another owner holds an unexpired claim; try again later.
    BUSY = "busy"


@dataclass(frozen=True)
class DueTimer:
    """One entry of the due-table (see :meth:`Ledger.timer_set`).

    :param id: the timer's id.
    :param record: what its owner stored with it (JSON text).
    :param version: a token of the owner's, changed each time the timer is
        set again; :meth:`Ledger.timer_finish` removes only the version it
        names, so a fire never removes a timer set again meanwhile.
    :param due_ms: when it is due, in milliseconds since the epoch.
    :param attempts: how many times it was claimed since it was last set.
    """

    id: str
    record: str
    version: str
    due_ms: int
    attempts: int = 0


class DigestAdd(enum.Enum):
    """Outcome of :meth:`Ledger.digest_add`."""

    #: The item joined the group's open window.
    ADDED = "added"
    #: The item joined a window opened now: the group's timer was set.
    OPENED = "opened"
    #: A window was opened now and the item was not kept: send it at once.
    FIRST = "first"
    #: The group holds that item already.
    DUPLICATE = "duplicate"


class Ledger(ABC):
    """Base class of ledgers: claims and dead letters, shared by every
    process that uses the same ledger.

    A subclass is built with :meth:`from_config` from the application, so a
    worker that imports the application builds the same ledger.
    """

    #: The short name accepted in ``NOTIFICATIONS_LEDGER``.
    alias: ClassVar[str] = ""

    @classmethod
    @abstractmethod
    def from_config(cls, app: Flask, *, backend: Backend | None = None, broker: Any = None) -> Ledger:
        """Build the ledger from the application's config.

        :param app: the application, defaults applied to its config.
        :param backend: the application's transport, whose connection a
            ledger on the same server may share.
        :param broker: the ``broker`` given to :meth:`Notifications.init_app`.
        """

    # -- claims ---------------------------------------------------------------

    @abstractmethod
    def claim(self, key: str, token: str, timeout: float) -> Claim:
        """Claim the work named ``key`` for ``timeout`` seconds, as ``token``.

        :return: :attr:`Claim.ACQUIRED` if ``token`` now holds it,
            :attr:`Claim.DONE` if the work was recorded as done, or
            :attr:`Claim.BUSY` if another token holds an unexpired claim.
        :raises BackendError: the ledger cannot be reached.
        """

    @abstractmethod
    def extend(self, key: str, token: str, timeout: float) -> bool:
        """Make ``token``'s claim on ``key`` last ``timeout`` seconds from now.

        :return: ``False`` if ``token`` no longer holds the claim.
        """

    @abstractmethod
    def complete(self, key: str, token: str, ttl: float) -> bool:
        """Record the work as done, for ``ttl`` seconds, if ``token`` holds the
        claim or nobody does (it expired and nobody took it since).

        :return: ``False`` if another token holds the claim; nothing changes.
        """

    @abstractmethod
    def release(self, key: str, token: str) -> bool:
        """Give up ``token``'s claim, so the work may be tried again.

        :return: ``False`` if ``token`` did not hold it; nothing changes.
        """

    # -- dead letters ---------------------------------------------------------

    @abstractmethod
    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        """Keep a failed delivery; return the id it is kept under."""

    @abstractmethod
    def dead_letters(self) -> list[dict[str, Any]]:
        """Every kept dead letter, oldest first, each with its ``id``."""

    def get_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        """The dead letter ``letter_id``, or ``None``; it stays kept."""
        for letter in self.dead_letters():
            if letter["id"] == letter_id:
                return letter
        return None

    @abstractmethod
    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        """Remove and return a dead letter, or ``None`` if there is none."""

    def mark_dead_letter(self, letter_id: str, expected: str, state: str) -> str | None:
        """Set the ``retry`` state of a kept dead letter to ``state`` if it is
        ``expected`` now (``""`` for a letter never retried), in one atomic
        step. A letter's state is listed with it, as its ``retry`` field.

        :return: the state after the call (``state``, or the one that did
            not match), or ``None`` if there is no such letter.
        :raises NotImplementedError: the ledger keeps no such state; a
            retry then enqueues the letter and removes it, without a mark.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement mark_dead_letter().")

    def dead_letter_count(self) -> int:
        """How many dead letters are kept. Ledgers that can count without
        reading them all override it."""
        return len(self.dead_letters())

    # -- outbox -------------------------------------------------------------

    # The outbox keeps each delivery that was handed to the broker until the
    # worker has taken it over (see flask_notifications.worker.outbox). An
    # entry is an id, a JSON record and the time (in milliseconds since the
    # epoch, by the writer's clock) when it is due for another enqueue.

    @abstractmethod
    def outbox_add(self, entries: Mapping[str, str], due_ms: int, *, remove: str | None = None) -> None:
        """Record each ``id -> record`` of ``entries`` as due at ``due_ms``
        (replacing an entry of the same id), and remove the entry ``remove``,
        in one atomic step.

        :raises LedgerUnavailableError: the ledger could not be reached, or
            refused the write; nothing changed.
        :raises BackendError: the write failed on the way; it may have been
            made.
        """

    def outbox_add_begin(self, entries: Mapping[str, str], due_ms: int) -> Callable[[], None]:
        """Start :meth:`outbox_add` of ``entries`` and return the call that
        waits for it, so that the caller can do something else meanwhile:
        ``send()`` enqueues its message while the record is written.

        Only a write that certainly did not happen raises here; one that may
        have happened raises from the call returned, which the caller makes
        after its enqueue (a send whose record may exist is a send that may
        be delivered, so its message goes out). Ledgers that cannot overlap
        the write make it here.

        :raises LedgerUnavailableError: nothing was written.
        """
        try:
            self.outbox_add(entries, due_ms)
        except LedgerUnavailableError:
            raise
        except BackendError as exc:
            return _raising(exc)
        return _nothing

    @abstractmethod
    def outbox_take(self, now_ms: int, until_ms: int, limit: int = 100) -> list[tuple[str, str]]:
        """The entries due by ``now_ms`` (at most ``limit``, the oldest due
        first), each made due again at ``until_ms`` as it is taken, so that
        of several sweepers only one takes it.

        :return: ``(id, record)`` pairs.
        """

    @abstractmethod
    def outbox_postpone(self, entry_id: str, due_ms: int) -> bool:
        """Make the entry due at ``due_ms``.

        :return: ``False`` if there is no such entry; nothing changes.
        """

    @abstractmethod
    def outbox_remove(self, entry_id: str) -> bool:
        """Remove an entry.

        :return: ``False`` if there was none.
        """

    def outbox_remove_many(self, entry_ids: Sequence[str]) -> int:
        """Remove the entries ``entry_ids`` in one atomic step: all of them
        or, when it raises, none (a send that raised forgets its batch's
        records this way, so that none of them is half forgotten). This
        default removes them one by one; the built-in ledgers override it.

        :return: how many there were.
        """
        return sum(1 for entry_id in entry_ids if self.outbox_remove(entry_id))

    @abstractmethod
    def outbox_size(self) -> int:
        """How many entries the outbox holds."""

    # -- timers (the due-table) and digests ---------------------------------

    # The due-table keeps timers until they fire (see flask_notifications.timers):
    # an id, a JSON record, a version and when it is due (milliseconds since
    # the epoch, by the writer's clock). A tick claims the timers due, each
    # made due again one lease later as it is claimed, so that a claim whose
    # owner died is claimed again once the lease lapses. A digest group keeps
    # the items of its open window beside its timer; a fire seals them (under
    # the timer's version) and finishes the window. The methods raise
    # NotImplementedError in ledgers that keep no due-table.

    def _no_timers(self) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__} keeps no timers; set NOTIFICATIONS_LEDGER to 'redis', 'sql' or 'memory'."
        )

    def timer_set(self, timer_id: str, record: str, due_ms: int, version: str, *, replace: bool = True) -> bool:
        """Keep the timer ``timer_id`` due at ``due_ms``, with ``record`` and
        ``version``; its attempts start again at 0.

        :param replace: ``False`` leaves a timer of that id as it is.
        :return: whether it was written.
        """
        raise self._no_timers()

    def timer_claim(self, now_ms: int, until_ms: int, limit: int = 100) -> list[DueTimer]:
        """The timers due by ``now_ms`` (at most ``limit``, the earliest due
        first), each made due again at ``until_ms`` and its attempts counted
        up as it is claimed, in one atomic step: of several tickers only one
        claims it."""
        raise self._no_timers()

    def timer_retry(self, timer_id: str, version: str, due_ms: int) -> bool:
        """Make the timer due at ``due_ms`` if it still has ``version``.

        :return: ``False`` if it has not; nothing changes.
        """
        raise self._no_timers()

    def timer_finish(self, timer_id: str, version: str) -> bool:
        """Remove the timer if it still has ``version``.

        :return: ``False`` if it has not (it was set again, or removed).
        """
        raise self._no_timers()

    def timer_cancel(self, timer_id: str) -> bool:
        """Remove the timer, whatever its version; a digest's items go with it.

        :return: ``False`` if there was none.
        """
        raise self._no_timers()

    def timer_get(self, timer_id: str) -> DueTimer | None:
        """The timer ``timer_id``, or ``None``."""
        raise self._no_timers()

    def timer_count(self) -> int:
        """How many timers are kept."""
        raise self._no_timers()

    def digest_add(self, timer: DueTimer, item_id: str, item: str, *, first_at_once: bool = False) -> DigestAdd:
        """Add ``item`` (JSON text) to the open window of the digest group
        whose timer is ``timer`` (the group's id is the timer's), in one
        atomic step with the timer: if the group has no timer (no open
        window), ``timer`` is set, and with ``first_at_once`` the item is not
        kept (the caller sends it at once). An item whose ``item_id`` the
        group holds already is not added again.
        """
        raise self._no_timers()

    def digest_seal(self, group: str, version: str) -> list[tuple[str, str]] | None:
        """Seal the open window of ``group`` under its timer's ``version``
        and return its items (``(item_id, item)``, in the order added).
        Sealing happens once: called again with the same version it returns
        the same items, and items added since wait for the next window.

        :return: ``None`` if the group's timer no longer has ``version``.
        """
        raise self._no_timers()

    def digest_finish(self, group: str, version: str, next_due_ms: int, next_version: str, *, keep_open: bool) -> bool:
        """End the window sealed under ``version``: drop its items and, in
        the same atomic step, set the group's timer due at ``next_due_ms``
        with ``next_version`` if items were added since or ``keep_open``,
        else remove it (the next item opens a window).

        :return: ``False`` if the timer no longer has ``version``; nothing changes.
        """
        raise self._no_timers()

    def digest_size(self, group: str) -> int:
        """How many items the digest group ``group`` keeps, open and sealed."""
        raise self._no_timers()

    # -- lifecycle ------------------------------------------------------------

    def ping(self) -> bool:
        """Whether the ledger's server answers. In-process ledgers always do."""
        return True

    def close(self) -> None:
        """Release connections. Idempotent."""
        return None


#: The names that :mod:`.choice` holds now, importable from here as before.
_MOVED = (
    "ALIASES",
    "IN_PROCESS_WARNING",
    "LEDGER_METHODS",
    "BackendLedger",
    "build_ledger",
    "is_redis_url",
    "keeps_claims",
    "resolve_ledger",
)


def __getattr__(name: str) -> Any:
    # Imported on first use: .choice imports this module.
    if name in _MOVED:
        from . import choice

        return getattr(choice, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
