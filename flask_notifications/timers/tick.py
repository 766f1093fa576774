"""The tick: claim the timers that are due and fire them.

Every ``celery worker`` of the application ticks every
``NOTIFICATIONS_TIMER_TICK`` seconds (:class:`~flask_notifications.timers.worker.TimerTicker`),
and Celery beat may tick too (:func:`~flask_notifications.timers.worker.beat_schedule`).
Tickers share the due-table: a timer is claimed by one of them, for
``NOTIFICATIONS_TIMER_CLAIM_LEASE`` seconds.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..state import runtime
from .fire import fire
from .owner import now_ms

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)

#: Timers one tick claims at most; a tick that claimed this many ticks again at once.
TICK_BATCH = 200


def tick(app: Flask, limit: int = TICK_BATCH) -> int:
    """Fire the timers of ``app`` that are due, up to ``limit``, in its
    application context.

    :return: how many were claimed.
    :raises BackendError: the ledger cannot be reached.
    """
    with app.app_context():
        ledger = runtime(app).ledger
        now = now_ms()
        lease = int(float(app.config["NOTIFICATIONS_TIMER_CLAIM_LEASE"]) * 1000)
        claimed = ledger.timer_claim(now, now + lease, limit)
        for timer in claimed:
            fire(app, ledger, timer)
    return len(claimed)
