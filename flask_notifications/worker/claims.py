"""Claims held while work runs: kept alive for their owner, waited on by
everyone else.

A consumer's run holds the claim of its (delivery, hub, consumer), and a
``send(idempotency_key=...)`` holds the claim of its key until the dispatch
is enqueued. Either renews its claim while it works, so that only the claim
of a process that died expires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..backoff import backoff
from ..errors import BackendError
from ..ledger.base import Claim, Ledger

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from celery import Celery
    from flask import Flask

#: The broker's redelivery timeout when its transport options name none:
#: kombu's default ``visibility_timeout`` for Redis, and longer than
#: RabbitMQ's default ``consumer_timeout`` (30 minutes).
DEFAULT_REDELIVERY_WINDOW = 3600.0

#: The shortest default life of a completion record, in seconds. The
#: visibility timeout is the *earliest* time the Redis transport may hand an
#: unacknowledged message out again, not the latest: it is restored whenever
#: a worker next sweeps, which may be much later (no worker running, a
#: restart), so the record outlives it by a wide margin.
MIN_IDEMPOTENCY_TTL = 6 * 3600.0


def idempotency_ttl(app: Flask, celery: Celery) -> float:
    """Seconds a completed delivery is remembered, so that a redelivered task
    does not repeat its effect: ``NOTIFICATIONS_IDEMPOTENCY_TTL``, or else
    twice the longest time a live broker and worker take to hand the task
    out again (the broker's ``visibility_timeout``, plus the claim timeout
    and the transport's ``unacked_restore_interval``), and at least
    :data:`MIN_IDEMPOTENCY_TTL`. A message left unacknowledged for longer
    than this may still repeat its effect."""
    configured = app.config.get("NOTIFICATIONS_IDEMPOTENCY_TTL")
    if configured:
        return float(configured)
    options = celery.conf.broker_transport_options or {}
    redelivery = float(options.get("visibility_timeout") or DEFAULT_REDELIVERY_WINDOW)
    redelivery += float(app.config["NOTIFICATIONS_CLAIM_TIMEOUT"])
    redelivery += float(options.get("unacked_restore_interval") or 0)
    return max(MIN_IDEMPOTENCY_TTL, 2 * redelivery)


@contextmanager
def held(
    ledger: Ledger, key: str, token: str, timeout: float, needed: bool = True, recording: bool = False
) -> Iterator[None]:
    """Keep ``token``'s claim on ``key`` alive while the block runs, extending
    it every third of ``timeout``, so that work slower than the timeout is
    not taken over by another owner.

    :param needed: ``False`` runs the block without touching any claim.
    :param recording: the block records the claim done; a claim that can no
        longer be extended may be done already (a record whose reply was
        lost), so that is not worth a warning.
    """
    if not needed:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(timeout / 3):
            try:
                if not ledger.extend(key, token, timeout):
                    # Not lost if the work ended meanwhile: its owner may
                    # have recorded it done, which no token extends.
                    if not stop.is_set():
                        logger.log(
                            logging.DEBUG if recording else logging.WARNING,
                            "The claim %s was lost while its work ran.",
                            key,
                        )
                    return
            except BackendError as exc:
                logger.warning("Could not extend the claim %s (%s); trying again.", key, exc)

    thread = threading.Thread(target=beat, name=f"claim-{key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def complete_held(app: Flask, ledger: Ledger, key: str, token: str, ttl: float, within: float, what: str) -> bool:
    """Record ``token``'s claim on ``key`` done (:meth:`Ledger.complete`),
    once the work it guarded happened. While the ledger fails (a restart, a
    failover, a database locked for a moment), keep the claim alive (see
    :func:`held`) and try again after a backoff (``NOTIFICATIONS_RETRY_BACKOFF``,
    up to ``NOTIFICATIONS_RETRY_BACKOFF_MAX``) for up to ``within`` seconds:
    a claim left to expire meanwhile would let another copy of the work
    (a redelivered message, the outbox's, another fire) take it and repeat
    the effect.

    :param what: what the claim guards, for the log ("the delivery ...").
    :return: what :meth:`Ledger.complete` answered: ``False`` when another
        owner holds the claim (this one outlived it).
    :raises BackendError: the ledger failed for ``within`` seconds; the
        claim is left to expire.
    """
    config = app.config
    try:
        return ledger.complete(key, token, ttl)
    except BackendError as exc:
        failed = exc
    deadline = time.monotonic() + within
    attempt = 0
    with held(ledger, key, token, float(config["NOTIFICATIONS_CLAIM_TIMEOUT"]), recording=True):
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.error("Could not record %s done (%s); a copy of it may repeat its effect.", what, failed)
                raise failed
            delay = backoff(
                attempt,
                float(config["NOTIFICATIONS_RETRY_BACKOFF"]),
                float(config["NOTIFICATIONS_RETRY_BACKOFF_MAX"]),
                bool(config["NOTIFICATIONS_RETRY_JITTER"]),
            )
            delay = min(delay, remaining)
            logger.warning("Could not record %s done (%s); trying again in %.1f s.", what, failed, delay)
            time.sleep(delay)
            attempt += 1
            try:
                return ledger.complete(key, token, ttl)
            except BackendError as exc:
                failed = exc


def claim_or_wait(ledger: Ledger, key: str, token: str, timeout: float, wait: float) -> Claim:
    """Claim ``key`` for ``timeout`` seconds as ``token``; while another owner
    holds it, ask again until it is done or free, for up to ``wait`` seconds
    after it was first found held.

    A claim held by a process that died expires within ``timeout`` (its owner
    no longer renews it), so a ``wait`` of at least ``timeout`` outlasts it.

    :return: :attr:`Claim.ACQUIRED`, :attr:`Claim.DONE`, or
        :attr:`Claim.BUSY` when the other owner still holds it after ``wait``.
    :raises BackendError: the ledger cannot be reached.
    """
    claimed = ledger.claim(key, token, timeout)
    deadline = time.monotonic() + wait
    pause = 0.02
    while claimed is Claim.BUSY:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(2 * pause, 0.5)
        claimed = ledger.claim(key, token, timeout)
    return claimed
