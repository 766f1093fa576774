"""A worker killed with SIGKILL in the middle of a push: the task is
delivered again, and each device gets the push once.

The push service holds the second device's request open until the worker
is dead, then drops it unanswered (it never took the message). The first
device's push was accepted and recorded as done before the kill, so the
redelivered task pushes to the second device only.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from flask_notifications import Event
from flask_notifications.webpush import push_subscriptions
from flask_notifications.webpush.vapid import VapidKeys
from tests.consumers.push_service import PushService
from tests.helpers import WorkerProcess, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.subprocess]

APP_MODULE = "tests.consumers.webpush_worker_app"


@pytest.fixture
def worker_env(
    redis_url: str,
    unique: str,
    tmp_path: Path,
    vapid_keys: VapidKeys,
    push_service: PushService,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    env = {
        "WEBPUSH_REDIS_URL": redis_url,
        "WEBPUSH_PREFIX": unique,
        "WEBPUSH_CLAIM_TIMEOUT": "3",
        "WEBPUSH_VISIBILITY_TIMEOUT": "2",
        "WEBPUSH_DATABASE_URL": f"sqlite:///{tmp_path / 'push.sqlite3'}",
        "WEBPUSH_VAPID_PRIVATE_KEY": vapid_keys.private_text,
        "WEBPUSH_ENDPOINTS": push_service.base,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def worker_app(worker_env: dict[str, str], redis_client: redis.Redis[bytes], unique: str) -> Iterator[ModuleType]:
    sys.modules.pop(APP_MODULE, None)
    module = importlib.import_module(APP_MODULE)
    yield module
    with module.app.app_context():
        module.notifications.inbox.close()
    module.notifications.get_backend(module.app).close()
    sys.modules.pop(APP_MODULE, None)
    keys = list(redis_client.scan_iter(f"{unique}*"))
    if keys:
        redis_client.delete(*keys)


def test_a_worker_killed_mid_send_pushes_once_per_device(
    worker_app: ModuleType,
    worker_env: dict[str, str],
    push_service: PushService,
    redis_client: redis.Redis[bytes],
    unique: str,
    tmp_path: Path,
) -> None:
    with worker_app.app.app_context():
        push_subscriptions.create_all()
        for name in ("first", "second"):
            push_subscriptions.subscribe("alice", push_service.device(name).subscription(push_service.base))
    push_service.hold.add("second")
    worker = WorkerProcess(APP_MODULE, worker_env, tmp_path / "worker.log", pool="solo")
    worker.start()
    try:
        with worker_app.app.app_context():
            worker_app.notifications.send(Event(None, "t", "Hello", "", recipients=["alice"]))
        wait_for(push_service.held.is_set, timeout=60)
        assert len(push_service.received("first")) == 1
        worker.kill()
        push_service.release.set()
        worker.start()
        wait_for(lambda: push_service.received("second"), timeout=90)
        wait_for(lambda: not redis_client.llen(unique) and not redis_client.zcard(f"{unique}:unacked_index"), 60)
    finally:
        worker.stop()
    attempts = [device for device, _, _ in push_service.attempts]
    assert attempts.count("first") == 1, worker.output()
    assert attempts.count("second") == 2
    assert [len(push_service.received(name)) for name in ("first", "second")] == [1, 1]
    assert push_service.refusals == []
    assert worker_app.notifications.get_ledger(worker_app.app).dead_letters() == []
