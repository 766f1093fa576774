"""What one run of a consumer task ended in: the task's return value, and
the ``outcome`` label of the consumer-run metric."""

from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    """The end of one consumer task run. The task returns the value (a plain
    string, so it crosses any result backend as JSON)."""

    #: The consumer ran and did its effect.
    CONSUMED = "consumed"
    #: The consumer ran and returned ``False``: it chose not to act.
    VETOED = "vetoed"
    #: The effect had already happened (a redelivered task); skipped.
    DUPLICATE = "duplicate"
    #: The event expired before the consumer ran; skipped.
    EXPIRED = "expired"
    #: Every recipient opted out of the consumer's channel; skipped.
    OPTED_OUT = "opted-out"
    #: The consumer failed for the last time, or permanently: kept as a dead letter.
    DEAD_LETTERED = "dead-lettered"
    #: No consumer of that name on that hub in this worker: kept as a dead letter.
    UNREGISTERED = "unregistered"
    #: The event could not be read: kept as a dead letter.
    INVALID = "invalid"
    #: The run failed and is retried later (metrics only).
    RETRIED = "retried"
    #: The run raised out of the task (metrics only).
    FAILED = "failed"
    #: The run was rejected back to the broker (metrics only).
    REJECTED = "rejected"
