"""Fixtures of the channel consumers: VAPID keys, the local push service,
and an application whose push subscriptions live in SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.webpush import push_subscriptions
from flask_notifications.webpush.vapid import VapidKeys
from tests.consumers.push_service import PushService


@pytest.fixture
def vapid_keys() -> VapidKeys:
    return VapidKeys.generate("mailto:ops@example.org")


@pytest.fixture
def push_service(vapid_keys: VapidKeys) -> Iterator[PushService]:
    with PushService(vapid_keys.public_text) as service:
        yield service


@pytest.fixture
def webpush_app(
    app: Flask, notifications: Notifications, vapid_keys: VapidKeys, push_service: PushService, tmp_path: Path
) -> Iterator[Flask]:
    """``app`` set up for Web Push to the local push service; the
    subscriptions table exists and the user is the ``X-User`` header."""
    app.config.update(
        NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY=vapid_keys.private_text,
        NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT=vapid_keys.subject,
        NOTIFICATIONS_WEBPUSH_ENDPOINTS=[push_service.base],
        NOTIFICATIONS_INBOX_URL=f"sqlite:///{tmp_path / 'push.sqlite3'}",
    )
    from flask import request

    @notifications.inbox.user_loader
    def user() -> str | None:
        return request.headers.get("X-User")

    push_subscriptions.create_all()
    yield app
    notifications.inbox.close()
