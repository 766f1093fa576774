"""The tick: claim the timers that are due and fire them.

Every ``celery worker`` of the application ticks every
``NOTIFICATIONS_TIMER_TICK`` seconds (:class:`~flask_notifications.timers.worker.TimerTicker`),
and Celery beat may tick too (:func:`~flask_notifications.timers.worker.beat_schedule`).
Tickers share the due-table: a timer is claimed by one of them, for
``NOTIFICATIONS_TIMER_CLAIM_LEASE`` seconds.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..state import runtime
from .fire import fire
from .owner import now_ms

if TYPE_CHECKING:
    from flask import Flask

    from ..ledger.base import DueTimer

logger = logging.getLogger(__name__)

#: Timers one tick claims at most; a tick that claimed this many ticks again at once.
TICK_BATCH = 200


def tick(app: Flask, limit: int = TICK_BATCH) -> int:
    """Fire the timers of ``app`` that are due, up to ``limit``, in its
    application context, ``NOTIFICATIONS_TIMER_CONCURRENCY`` at a time.

    :return: how many were claimed.
    :raises BackendError: the ledger cannot be reached.
    """
    with app.app_context():
        ledger = runtime(app).ledger
        now = now_ms()
        lease = int(float(app.config["NOTIFICATIONS_TIMER_CLAIM_LEASE"]) * 1000)
        claimed = ledger.timer_claim(now, now + lease, limit)
        threads = min(int(app.config["NOTIFICATIONS_TIMER_CONCURRENCY"]), len(claimed))
        if threads <= 1:
            for timer in claimed:
                fire(app, ledger, timer)
            return len(claimed)

    def run(timer: DueTimer) -> None:
        with app.app_context():
            fire(app, ledger, timer)

    # A fire mostly waits on the ledger and the wrapped consumer's server.
    with ThreadPoolExecutor(threads, thread_name_prefix="timer-fire") as pool:
        list(pool.map(run, claimed))
    return len(claimed)
