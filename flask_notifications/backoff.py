"""The delay between attempts, shared by the Celery tasks, the backends'
reconnections and the stream listener, so none of them imports another."""

from __future__ import annotations

import threading
import time

from redis.backoff import ExponentialBackoff, FullJitterBackoff


def backoff(failures: int, base: float, cap: float, jitter: bool = True) -> float:
    """Seconds to wait after ``failures`` failed attempts: ``base`` doubled
    after each failure up to ``cap``, with full jitter (a uniform draw up to
    that delay) when ``jitter`` is set, so that many retries spread out.
    The one backoff of the Celery side and of the backends' reconnections,
    on redis-py's :mod:`redis.backoff`."""
    policy = FullJitterBackoff(cap, base) if jitter else ExponentialBackoff(cap, base)
    # 2**64 * base is past any cap; larger exponents would overflow a float.
    return float(policy.compute(min(max(failures, 0), 64)))


def wait_until(moment: float, timeout: float, stop: threading.Event) -> bool:
    """Wait until the :func:`time.monotonic` time ``moment``, ``timeout``
    seconds at most, like :func:`time.sleep` (gevent patches both) except
    that setting ``stop`` ends the wait. Return whether ``moment`` has come:
    a subscription's backoff is over, and it may reconnect."""
    delay = moment - time.monotonic()
    if delay > 0:
        stop.wait(min(delay, timeout))
    return time.monotonic() >= moment
