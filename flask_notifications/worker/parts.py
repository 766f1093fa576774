"""Claims on the parts of one delivery: each device of a push, each target
of a fan-out, done once.

The consumer task's own claim makes a redelivered task skip a delivery that
completed. A consumer that sends to several places in one run (a push to
each of a user's devices, a message to each Apprise target) also needs to
skip the places a killed or failed run already reached: it claims each
part under its delivery's claim key, and records the part done as soon as
its send returned::

    parts = DeliveryParts.current()
    for device in devices:
        with parts.part(device.id) as todo:
            if todo:
                send(device)

A part whose run died while it was sending is given to the next run once
its claim expires (``NOTIFICATIONS_CLAIM_TIMEOUT``): the other side may have
received it already, and then receives it twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app

from ..errors import BackendError, RetryLaterError
from ..ledger.base import Claim, Ledger
from ..state import runtime
from .claims import claim_or_wait, idempotency_ttl
from .delivery import current_delivery
from .messages import claim_key

logger = logging.getLogger(__name__)


class DeliveryParts:
    """The parts of the running delivery, claimed in the ledger.

    :param ledger: where the claims live; ``None`` claims nothing (outside
        a delivery, when a consumer is called directly).
    :param prefix: the delivery's claim key.
    :param timeout: seconds a part's claim lasts.
    :param ttl: seconds a done part is remembered.
    """

    def __init__(self, ledger: Ledger | None, prefix: str = "", timeout: float = 300.0, ttl: float = 0.0) -> None:
        self.ledger = ledger
        self.prefix = prefix
        self.timeout = timeout
        self.ttl = ttl

    @classmethod
    def current(cls) -> DeliveryParts:
        """The parts of :func:`~flask_notifications.worker.delivery.current_delivery`,
        or parts that claim nothing outside a delivery."""
        delivery = current_delivery()
        if delivery is None:
            return cls(None)
        state = runtime()
        config = current_app.config
        prefix = claim_key(delivery.delivery_id, delivery.hub_id, delivery.consumer)
        return cls(
            state.ledger,
            prefix,
            float(config["NOTIFICATIONS_CLAIM_TIMEOUT"]),
            idempotency_ttl(current_app, state.celery),
        )

    @contextmanager
    def part(self, name: str) -> Iterator[bool]:
        """Claim the part ``name`` while the block runs.

        The block gets ``True`` when the part is still to do, ``False`` when
        an earlier run did it. If the block returns, the part is recorded as
        done; if it raises, the claim is released, so the next run does it.

        :raises RetryLaterError: another run still holds the part after
            waiting for its claim to expire (a run that died while sending).
        :raises BackendError: the backend cannot be reached.
        """
        if self.ledger is None:
            yield True
            return
        key = f"{self.prefix}:part:{name}"
        token = uuid.uuid4().hex
        # A run that died mid-part leaves a claim that expires within the
        # timeout; the task's own claim expired just before it.
        claimed = claim_or_wait(self.ledger, key, token, self.timeout, self.timeout)
        if claimed is Claim.DONE:
            yield False
            return
        if claimed is Claim.BUSY:
            raise RetryLaterError(f"Part {name!r} of this delivery is held by another run.", self.timeout)
        try:
            yield True
        except BaseException:
            try:
                self.ledger.release(key, token)
            except BackendError as exc:
                logger.warning("Could not release the claim %s (%s); it expires on its own.", key, exc)
            raise
        self.ledger.complete(key, token, self.ttl)
