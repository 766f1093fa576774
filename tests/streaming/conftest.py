"""Fixtures of the fan-out's unit tests: an in-memory backend and the
process's fan-out on it, closed after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flask_notifications.backends.memory import MemoryPubSub
from flask_notifications.streaming.fanout import Fanout


@pytest.fixture
def backend() -> MemoryPubSub:
    return MemoryPubSub(history_size=10000)


@pytest.fixture
def fanout(backend: MemoryPubSub) -> Iterator[Fanout]:
    fanout = Fanout(backend, poll_interval=0.05)
    yield fanout
    fanout.close()
