"""Firing one due timer: find the consumer that set it, run its effect at
most once, and decide what happens to the timer when that fails.

A timer is claimed for a lease (``NOTIFICATIONS_TIMER_CLAIM_LEASE``): if the fire
does not finish it in time (its worker was killed), a later tick claims it
again. The effect of a fire is guarded by a ledger claim keyed on the
timer's id and version (:func:`once`), which is recorded as done once the
effect happened, so a fire claimed again does not repeat it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..backoff import backoff
from ..errors import BackendError, NotificationsError, PermanentConsumerError
from ..ledger.base import Claim
from ..state import runtime
from ..worker.claims import complete_held, held, idempotency_ttl
from .owner import TimedConsumer, now_ms

if TYPE_CHECKING:
    from flask import Flask

    from ..ledger.base import DueTimer, Ledger

logger = logging.getLogger(__name__)


class FireBusy(NotificationsError):
    """Another run of the same timer holds its claim: this one leaves it."""


def fire_key(timer: DueTimer) -> str:
    """The claim key of the effect of one version of a timer."""
    return f"timer:{timer.id}:{timer.version}"


def once(app: Flask, ledger: Ledger, timer: DueTimer, effect: Callable[[], Any]) -> bool:
    """Run ``effect`` unless a fire of this version of ``timer`` ran it
    already, holding the claim :func:`fire_key` while it runs.

    :return: whether it ran now.
    :raises FireBusy: another run holds the claim (it is alive, or died
        less than ``NOTIFICATIONS_CLAIM_TIMEOUT`` ago).
    """
    key = fire_key(timer)
    token = uuid.uuid4().hex
    timeout = float(app.config["NOTIFICATIONS_CLAIM_TIMEOUT"])
    claimed = ledger.claim(key, token, timeout)
    if claimed is Claim.DONE:
        return False
    if claimed is Claim.BUSY:
        raise FireBusy(f"Another run of timer {timer.id} holds its claim.")
    with held(ledger, key, token, timeout):
        try:
            effect()
        except BaseException:
            try:
                ledger.release(key, token)
            except BackendError as exc:
                logger.warning("Could not release the claim %s (%s); it expires on its own.", key, exc)
            raise
    # While the ledger fails, the claim stays held and its record is tried
    # again for up to NOTIFICATIONS_TIMER_CLAIM_LEASE: released or expired,
    # the next fire would repeat the effect. After that, it raises.
    ttl = idempotency_ttl(app, runtime(app).celery)
    lease = float(app.config["NOTIFICATIONS_TIMER_CLAIM_LEASE"])
    complete_held(app, ledger, key, token, ttl, lease, f"the fire {key}")
    return True


def owner_of(app: Flask, fields: dict[str, Any]) -> TimedConsumer | None:
    """The consumer whose timer has the record ``fields``, in this process's
    hubs; ``None`` also when the consumer of that name is of another kind (a
    deploy put a ``Digest`` where a ``Delayed`` was), which would misread it."""
    hub = runtime(app).extension.hubs.get(str(fields.get("h")))
    consumer = hub.get_consumer(str(fields.get("c"))) if hub is not None else None
    if isinstance(consumer, TimedConsumer) and consumer.kind == fields.get("kind"):
        return consumer
    return None


def fire(app: Flask, ledger: Ledger, timer: DueTimer) -> bool:
    """Fire ``timer``, claimed by a tick, inside ``app``'s context.

    A fire that fails is tried again after a backoff (``NOTIFICATIONS_RETRY_BACKOFF``,
    up to ``NOTIFICATIONS_RETRY_BACKOFF_MAX``), as often as it takes; one that fails
    with a :class:`~flask_notifications.errors.PermanentConsumerError` is
    dropped, with an error in the log.

    :return: whether it ended (fired, or dropped); ``False`` when it is to
        be tried again.
    """
    config = app.config
    try:
        fields: dict[str, Any] = json.loads(timer.record)
    except ValueError:
        logger.error("Dropping the unreadable timer %s.", timer.id)
        ledger.timer_cancel(timer.id)
        return True
    owner = owner_of(app, fields)
    if owner is None:
        # A deploy removed or renamed the consumer: keep the timer for a
        # worker that knows it, and say so.
        logger.error(
            "No consumer %s with timers on hub %r in this worker; timer %s waits for one.",
            fields.get("c"),
            fields.get("h"),
            timer.id,
        )
        _again(ledger, timer, float(config["NOTIFICATIONS_RETRY_BACKOFF_MAX"]))
        return False
    try:
        owner.fire(app, ledger, timer, fields)
    except FireBusy:
        return False  # due again when its lease lapses
    except PermanentConsumerError as exc:
        logger.error("Timer %s of %r failed permanently and is dropped: %r", timer.id, owner, exc)
        owner.drop(ledger, timer)
        return True
    except Exception as exc:
        delay = backoff(
            timer.attempts - 1,
            float(config["NOTIFICATIONS_RETRY_BACKOFF"]),
            float(config["NOTIFICATIONS_RETRY_BACKOFF_MAX"]),
            bool(config["NOTIFICATIONS_RETRY_JITTER"]),
        )
        logger.warning(
            "Timer %s of %r failed (attempt %d), trying again in %.1f s: %r",
            timer.id,
            owner,
            timer.attempts,
            delay,
            exc,
        )
        _again(ledger, timer, delay)
        return False
    return True


def _again(ledger: Ledger, timer: DueTimer, delay: float) -> None:
    try:
        ledger.timer_retry(timer.id, timer.version, now_ms() + int(delay * 1000))
    except BackendError as exc:
        # It is due again when its lease lapses.
        logger.warning("Could not reschedule timer %s (%s).", timer.id, exc)
