"""The delay between attempts, shared by the Celery tasks, the backends'
reconnections and the stream listener, so none of them imports another."""

from __future__ import annotations

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
