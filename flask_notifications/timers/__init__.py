"""Durable timers: a due-table in the ledger, ticked by every worker (and
Celery beat, if it runs), for the consumers that act later
(:class:`~flask_notifications.consumers.Delayed`,
:class:`~flask_notifications.consumers.Digest`). See :doc:`timers`."""

from __future__ import annotations

from .api import Timers
from .conditions import Condition, read_in_inbox
from .fire import fire, once
from .owner import TimedConsumer
from .tick import tick
from .worker import BEAT_ENTRY, TICK_TASK, TimerTicker, beat_schedule, install

__all__ = [
    "BEAT_ENTRY",
    "TICK_TASK",
    "Condition",
    "TimedConsumer",
    "TimerTicker",
    "Timers",
    "beat_schedule",
    "fire",
    "install",
    "once",
    "read_in_inbox",
    "tick",
]
