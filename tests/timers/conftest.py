"""An application that runs its consumers eagerly, in memory, for the unit
tests of the timers; they tick by hand (``notifications.timers.tick()``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_notifications import Event, EventConsumer, Notifications


class Collect(EventConsumer):
    """Keeps what it receives; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0, error: type[Exception] = RuntimeError) -> None:
        super().__init__()
        self.events: list[Event] = []
        self.failures = failures
        self.error = error

    def consume(self, event: Event) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error("failing on purpose")
        self.events.append(event)


@pytest.fixture
def eager() -> Iterator[tuple[Flask, Notifications]]:
    app = Flask("timers")
    app.config.update(
        TESTING=True,
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_TIMER_TICK=None,
        NOTIFICATIONS_RETRY_BACKOFF=0.01,
        NOTIFICATIONS_RETRY_BACKOFF_MAX=0.05,
        NOTIFICATIONS_TIMER_CLAIM_LEASE=0.3,
    )
    notifications = Notifications(app)
    with app.app_context():
        yield app, notifications


@pytest.fixture
def by_email(eager: tuple[Flask, Notifications], tmp_path: Path) -> tuple[Notifications, Collect]:
    """The eager app with preferences on (SQLite, no caching) and a
    consumer of channel ``email`` to wrap."""
    app, notifications = eager
    app.config.update(
        NOTIFICATIONS_INBOX_URL=f"sqlite:///{tmp_path / 'prefs.db'}",
        NOTIFICATIONS_PREFERENCES=True,
        NOTIFICATIONS_PREFERENCES_MAX_AGE=0,
    )
    notifications.preferences.create_all()
    inner = Collect()
    inner.channel = "email"
    return notifications, inner


def ticked_until(notifications: Notifications, condition: Any, timeout: float = 10.0) -> Any:
    """Tick until ``condition()`` is true; return what it returned."""
    from tests.helpers import wait_for

    def check() -> Any:
        notifications.timers.tick()
        return condition()

    return wait_for(check, timeout=timeout)


from tests.consumers.test_mail import SmtpServer, smtp_server  # noqa: E402, F401 (the real SMTP server fixture)

__all__ = ["Collect", "SmtpServer", "ticked_until"]
