"""Fixtures of the preferences tests: each runs on SQLite and on the real
PostgreSQL (the inbox tests' ``inbox_url``), in tables of its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.consumers.consumer import EventConsumer
from flask_notifications.event import Event
from flask_notifications.preferences import Preferences
from tests.inbox.conftest import inbox_url, table_name

__all__ = ["inbox_url"]


class Recording(EventConsumer):
    """A consumer on a channel of its own, that keeps what it got."""

    def __init__(self, channel: str | None, name: str | None = None) -> None:
        super().__init__(name)
        self.channel = channel
        self.got: list[Event] = []

    def consume(self, event: Event) -> None:
        self.got.append(event)


def use_database(app: Flask, url: str, unique: str, **config: Any) -> None:
    app.config.update(
        NOTIFICATIONS_INBOX_URL=url,
        NOTIFICATIONS_INBOX_TABLE=table_name(unique),
        NOTIFICATIONS_PREFERENCES_TABLE="prefs_" + unique.replace("-", "_"),
        NOTIFICATIONS_PREFERENCES=True,
        **config,
    )


@pytest.fixture
def preferences(app: Flask, notifications: Notifications, inbox_url: str, unique: str) -> Iterator[Preferences]:
    """The test app's preferences, their table created, dropped at the end."""
    use_database(app, inbox_url, unique)
    preferences = notifications.preferences
    preferences.create_all()
    yield preferences
    with app.app_context():
        preferences.drop_all()
        notifications.inbox.close()


@pytest.fixture
def outcomes() -> Iterator[list[tuple[str, Any]]]:
    """What each consumer task run returned, ``(task name, outcome)``, as a
    real worker in this process ran them."""
    from celery.signals import task_postrun

    seen: list[tuple[str, Any]] = []

    def on_postrun(sender: Any = None, retval: Any = None, **kwargs: Any) -> None:
        if sender is not None:
            seen.append((sender.name, retval))

    task_postrun.connect(on_postrun, weak=False)
    yield seen
    task_postrun.disconnect(on_postrun)
