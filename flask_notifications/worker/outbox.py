"""The outbox: every delivery handed to the broker is also recorded in the
ledger until a worker has taken it over, and a sweeper in every worker
enqueues again whatever was not taken over in time.

A broker may lose a message it acknowledged: kombu's Redis transport pops a
message (``BRPOP``) and only then records it as unacknowledged, so a Redis
killed between the two loses it. The outbox closes that gap, for the
dispatch message and for each consumer's message:

1. :meth:`Notifications.send` records the delivery (its event, targets and
   time) under ``d:<delivery id>``, then enqueues the dispatch message.
2. The dispatch task, before it enqueues the consumer tasks, replaces that
   entry with one per idempotent consumer (``c:<delivery>:<hub>:<task>``),
   in one atomic step. When the ledger fails to, the dispatch is tried
   again, and is never recorded done with the delivery's entry in place.
3. A consumer task that ends (consumed, duplicate, vetoed, expired or
   dead-lettered) removes its entry; one that retries makes it due after
   its retry.
4. The sweeper (:class:`OutboxSweeper`, a step of every ``celery worker``
   of the application) takes the entries due, every
   ``NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL`` seconds, and enqueues each again:
   a dispatch as it was sent, a consumer unless its claim says it ran.

An entry is due ``NOTIFICATIONS_OUTBOX_TIMEOUT`` seconds after it was
written. While messages wait in the workers' queues (:func:`waiting`), the
sweeper leaves an entry younger than :data:`MAX_WAIT_TIMEOUTS` timeouts
where it is: its message is more likely in that backlog than lost, and a
copy would only lengthen the backlog. Each time the sweeper enqueues an
entry again, it is due again once as long as its age has passed (at least
one timeout, at most :data:`MAX_WAIT_TIMEOUTS` of them), so an entry
behind a long backlog is enqueued again a few times, not once per timeout.

A re-enqueued message that was not lost after all (it waited in a backlog
longer than the timeout) runs twice. Its second run repeats no effect:

- a dispatch claims ``dispatch:<delivery id>`` in the ledger
  (:func:`claim_dispatch`) and records it done once the consumers are
  enqueued (:func:`dispatched`), so a second run of the same delivery's
  dispatch enqueues nothing, and a consumer that keeps no claims
  (``idempotent = False``, which gets no entry of its own) runs once;
- a consumer's run finds its claim done
  (:mod:`flask_notifications.worker.claims`).

The record of a send is not best effort: a ``send()`` whose record fails
raises :class:`~flask_notifications.errors.OutboxUnavailableError`, before
its enqueue when the write could not start (nothing was enqueued), after it
when the write failed on the way (the message may be delivered). Every
other outbox write is best effort: when the ledger cannot be reached, the
delivery goes on without its entry (and a warning), and the entry it would
have replaced or removed stays for the sweeper.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from celery import Celery
from flask import Flask

from ..errors import BackendError, LedgerUnavailableError
from ..ledger.base import Claim, Ledger
from ..state import runtime
from .claims import idempotency_ttl
from .messages import DISPATCH_TASK, claim_key, enqueue, enqueue_delivery
from .steps import PeriodicStep

logger = logging.getLogger(__name__)

#: Entries one sweep takes at most; a sweep that took this many sweeps again at once.
SWEEP_BATCH = 500
#: The longest wait between two enqueues of one entry, in timeouts.
MAX_WAIT_TIMEOUTS = 16

#: The application each Celery app's sweeper works for (see :func:`install`).
_apps: weakref.WeakKeyDictionary[Celery, weakref.ref[Flask]] = weakref.WeakKeyDictionary()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _timeout(app: Flask) -> float | None:
    timeout = app.config.get("NOTIFICATIONS_OUTBOX_TIMEOUT")
    return float(timeout) if timeout else None


def dispatch_entry(delivery_id: str) -> str:
    """The outbox id of a delivery whose dispatch has not run yet."""
    return f"d:{delivery_id}"


def consumer_entry(delivery_id: str, hub_id: str, task_name: str) -> str:
    """The outbox id of one consumer's run of a delivery."""
    return f"c:{claim_key(delivery_id, hub_id, task_name)}"


#: Ledger classes that keep no outbox, already warned about.
_no_outbox: set[str] = set()


def _warn(what: str, exc: BaseException) -> None:
    if isinstance(exc, NotImplementedError):
        # A ledger of an older design: say so once, not on every send.
        if str(exc) not in _no_outbox:
            _no_outbox.add(str(exc))
            logger.warning("%s Deliveries go on without the outbox.", exc)
        return
    logger.warning("Could not %s in the outbox (%s); the delivery goes on without it.", what, exc)


def record_sends(app: Flask, ledger: Ledger, sends: Iterable[tuple[str, str, list[list[str]]]]) -> Callable[[], bool]:
    """Start recording each ``(delivery id, event JSON, targets)`` about to
    be enqueued, in one ledger write, and return the call that waits for
    that write: the caller enqueues meanwhile (see
    :meth:`~flask_notifications.ledger.base.Ledger.outbox_add_begin`).

    The message may then reach a worker before its record is written; the
    dispatch's claim makes the re-enqueue of such a record a duplicate
    (:func:`claim_dispatch`), which removes the record.

    :return: the call that waits, which returns whether they were recorded
        (``False`` when the outbox is off or the ledger keeps none), and
        raises :class:`~flask_notifications.errors.BackendError` when the
        write failed on its way (it may have been made).
    :raises LedgerUnavailableError: the write did not happen; nothing was
        recorded.
    """
    timeout = _timeout(app)
    if timeout is None:
        return _not_recorded
    now = _now_ms()
    entries = {
        dispatch_entry(delivery_id): json.dumps({"e": event_json, "t": targets, "at": now})
        for delivery_id, event_json, targets in sends
    }
    if not entries:
        return _not_recorded
    try:
        written = ledger.outbox_add_begin(entries, now + int(timeout * 1000))
    except NotImplementedError as exc:
        _warn("record a send", exc)
        return _not_recorded
    except LedgerUnavailableError:
        raise
    except BackendError as exc:
        # A ledger that cannot tell raised from the write itself: it may
        # have been made, as when its reply is lost.
        failed = exc

        def fail() -> bool:
            raise failed

        return fail

    def wait() -> bool:
        written()
        return True

    return wait


def _not_recorded() -> bool:
    return False


def forget_sends(ledger: Ledger, delivery_ids: Iterable[str]) -> bool:
    """Remove the entries of sends that raised, which the caller may send
    again; one left behind (the ledger failed too) is delivered later.

    :return: whether none is left behind. The removal is one atomic step
        (:meth:`~flask_notifications.ledger.base.Ledger.outbox_remove_many`):
        a batch is forgotten whole or not at all, never in part.
    """
    try:
        ledger.outbox_remove_many([dispatch_entry(delivery_id) for delivery_id in delivery_ids])
    except NotImplementedError:
        return True
    except BackendError as exc:
        logger.warning("A send that raised stays in the outbox (%s) and will be delivered.", exc)
        return False
    return True


def dispatch_key(delivery_id: str) -> str:
    """The claim key of a delivery's dispatch."""
    return f"dispatch:{delivery_id}"


def claim_dispatch(app: Flask, ledger: Ledger, delivery_id: str, token: str) -> Claim | None:
    """Claim the dispatch of ``delivery_id`` for the run ``token``, while
    the outbox is on: the sweeper may have enqueued a second copy of its
    message. The claim is a lease of ``NOTIFICATIONS_CLAIM_TIMEOUT``
    seconds until :func:`dispatched` records it done, so a copy of a run
    that died (its message lost with it) takes it over once it expired.

    :return: the claim; ``None`` when the outbox is off or the ledger
        failed (the dispatch runs, as it did without the outbox).
    """
    if _timeout(app) is None:
        return None
    try:
        claimed = ledger.claim(dispatch_key(delivery_id), token, float(app.config["NOTIFICATIONS_CLAIM_TIMEOUT"]))
        if claimed is Claim.DONE:
            # A copy: its record, if the copy's enqueue was not its cause,
            # was written after the first run took the message.
            ledger.outbox_remove(dispatch_entry(delivery_id))
    except (BackendError, NotImplementedError) as exc:
        _warn("claim a dispatch", exc)
        return None
    return claimed


def dispatched(app: Flask, celery: Celery, ledger: Ledger, delivery_id: str, token: str, ok: bool) -> None:
    """Record the dispatch of ``delivery_id`` by the run ``token`` as done
    when ``ok`` (its consumers are enqueued, each under its own entry), or
    free its claim for the retry, or for the copy that the sweeper enqueues
    for the delivery's entry when :func:`fanning_out` could not replace it:
    a claim recorded done then would make that copy remove the entry, and
    a consumer's message that the broker lost would be lost for good."""
    if _timeout(app) is None:
        return
    key = dispatch_key(delivery_id)
    try:
        if ok:
            ledger.complete(key, token, idempotency_ttl(app, celery))
        else:
            ledger.release(key, token)
    except BackendError as exc:
        # The claim expires on its own; a copy run meanwhile waits for it.
        _warn("record a dispatch", exc)


def fanning_out(
    app: Flask, ledger: Ledger, delivery_id: str, event_json: str, consumers: Sequence[tuple[str, str]]
) -> bool:
    """Replace the delivery's entry with one per ``(hub id, task name)`` of
    ``consumers``, before the dispatch enqueues them.

    :return: whether they were written (``True`` when the outbox is off).
    """
    timeout = _timeout(app)
    if timeout is None:
        return True
    now = _now_ms()
    entries = {
        consumer_entry(delivery_id, hub_id, task_name): json.dumps(
            {"e": event_json, "h": hub_id, "c": task_name, "d": delivery_id, "at": now}
        )
        for hub_id, task_name in consumers
    }
    try:
        ledger.outbox_add(entries, now + int(timeout * 1000), remove=dispatch_entry(delivery_id))
    except NotImplementedError as exc:
        _warn("record a fan-out", exc)
        return True
    except BackendError as exc:
        logger.warning("Could not record the fan-out of delivery %s in the outbox (%s).", delivery_id, exc)
        return False
    return True


def finished(app: Flask, ledger: Ledger, delivery_id: str, hub_id: str, task_name: str) -> None:
    """Remove the entry of a consumer's run that ended."""
    if _timeout(app) is None:
        return
    try:
        ledger.outbox_remove(consumer_entry(delivery_id, hub_id, task_name))
    except (BackendError, NotImplementedError) as exc:
        # The sweeper enqueues it again later, and its claim skips it.
        _warn("remove a finished run", exc)


def postpone(app: Flask, ledger: Ledger, delivery_id: str, hub_id: str, task_name: str, countdown: float) -> None:
    """Make a consumer's entry due after its retry, which runs in
    ``countdown`` seconds, so that the sweeper does not double it."""
    timeout = _timeout(app)
    if timeout is None:
        return
    due = _now_ms() + int((countdown + timeout) * 1000)
    try:
        ledger.outbox_postpone(consumer_entry(delivery_id, hub_id, task_name), due)
    except (BackendError, NotImplementedError) as exc:
        _warn("postpone a retry", exc)


def sweep(celery: Celery, app: Flask, ledger: Ledger) -> int:
    """Enqueue again every entry that is due; return how many were.

    :raises BackendError: the ledger cannot be reached.
    :raises OperationalError: the broker cannot be reached; the entries
        taken are due again one timeout later.
    """
    timeout = _timeout(app)
    if timeout is None:
        return 0
    now = _now_ms()
    enqueued = 0
    taken = ledger.outbox_take(now, now + int(timeout * 1000), SWEEP_BATCH)
    backlog = bool(taken) and waiting(celery) > 0
    for entry_id, raw in taken:
        try:
            record: dict[str, Any] = json.loads(raw)
        except ValueError:
            logger.error("Dropping the unreadable outbox entry %s.", entry_id)
            ledger.outbox_remove(entry_id)
            continue
        if backlog and now - int(record.get("at", 0)) < timeout * 1000 * MAX_WAIT_TIMEOUTS:
            # Messages wait in the queue: this one is more likely among
            # them than lost. It is due again in one timeout (outbox_take).
            continue
        if entry_id.startswith("d:"):
            delivery_id = entry_id[2:]
            logger.warning("The dispatch of delivery %s did not start in time; enqueueing it again.", delivery_id)
            enqueue(celery, DISPATCH_TASK, (record["e"], record["t"]), kwargs={"delivery_id": delivery_id})
        elif not _enqueue_consumer(celery, ledger, entry_id, record):
            continue
        enqueued += 1
        _wait_longer(ledger, entry_id, record, now, timeout)
    return enqueued


def waiting(celery: Celery) -> int:
    """How many messages wait in the queues that ``celery``'s workers take
    from, as the broker counts them (without those handed to a worker);
    0 when the broker cannot tell."""
    total = 0
    try:
        with celery.connection_for_read() as conn:
            channel = conn.default_channel
            for name in celery.amqp.queues.consume_from:
                try:
                    total += int(channel.queue_declare(queue=name, passive=True)[1])
                except Exception:  # no such queue yet (Redis keeps no empty list), or another refusal
                    channel = conn.default_channel
    except Exception:  # the broker cannot be reached: count nothing, and enqueue as before
        return 0
    return total


def _wait_longer(ledger: Ledger, entry_id: str, record: dict[str, Any], now: int, timeout: float) -> None:
    """Make an entry that was enqueued again due once its age has passed
    again: a message that waits behind a long backlog is enqueued again
    a few times, not once per timeout."""
    age = now - int(record.get("at", now))
    wait = min(max(age, int(timeout * 1000)), int(timeout * 1000) * MAX_WAIT_TIMEOUTS)
    if wait > timeout * 1000:
        ledger.outbox_postpone(entry_id, now + wait)


def _enqueue_consumer(celery: Celery, ledger: Ledger, entry_id: str, record: dict[str, Any]) -> bool:
    delivery_id, hub_id, task_name = record["d"], record["h"], record["c"]
    key = claim_key(delivery_id, hub_id, task_name)
    token = uuid.uuid4().hex
    claimed = ledger.claim(key, token, 5.0)
    if claimed is Claim.DONE:
        # It ran, but its entry was not removed.
        ledger.outbox_remove(entry_id)
        return False
    if claimed is Claim.BUSY:
        return False  # it runs now; the entry is due again later
    ledger.release(key, token)
    logger.warning("Consumer %s of delivery %s did not run in time; enqueueing it again.", task_name, delivery_id)
    enqueue_delivery(celery, task_name, hub_id, record["e"], delivery_id)
    return True


def install(celery: Celery, app: Flask) -> None:
    """Make every ``celery worker`` of ``celery`` run the sweeper for ``app``."""
    _apps[celery] = weakref.ref(app)
    celery.steps["worker"].add(OutboxSweeper)


class OutboxSweeper(PeriodicStep):
    """The worker step that runs :func:`sweep` in a thread of the worker's
    main process, every ``NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL`` seconds,
    from the worker's start to its shutdown. Every worker of the
    application runs one; the ledger hands each due entry to one of them."""

    label = "Outbox sweeper"
    thread_name = "outbox-sweeper"
    failure = "The outbox sweep"

    def app_of(self, celery: Celery) -> Flask | None:
        ref = _apps.get(celery)
        return ref() if ref is not None else None

    def interval(self, app: Flask) -> float | None:
        return None if _timeout(app) is None else float(app.config["NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL"])

    def once(self, celery: Celery, app: Flask) -> bool:
        with app.app_context():
            swept = sweep(celery, app, runtime(app).ledger)
        return swept >= SWEEP_BATCH
