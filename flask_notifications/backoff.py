"""The delay between attempts, shared by the Celery tasks and the stream
listener, so neither side imports the other."""

from __future__ import annotations

import random


def backoff(failures: int, base: float, cap: float, jitter: bool) -> float:
    """Seconds before attempt ``failures + 1``: exponential, capped, with
    full jitter so that retries of many tasks spread out."""
    delay = min(cap, base * (2**failures))
    return random.uniform(0, delay) if jitter else delay
