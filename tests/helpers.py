"""Small helpers for tests that wait on other processes or threads."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy, and return it.

    The timeout only bounds a hung test; no test asserts on durations.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {predicate!r}")
        time.sleep(interval)
