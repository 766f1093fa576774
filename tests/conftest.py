"""Shared fixtures: a Flask app on the real Redis, and a real Celery worker.

Every test gets its own key prefix and Celery queue, so test runs (and
developers) sharing one Redis server never see each other's messages, and
so the suite runs in parallel (pytest-xdist) as well as serially.

Tests that need a server (Redis, RabbitMQ, a private redis-server, a
browser, a Celery worker in a subprocess) get the ``server`` marker:
``pytest -m "not server and not reliability"`` is the fast lane
(``./run-tests.sh --fast``): the unit tests, on the in-memory backend.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import redis
from celery import _state as celery_state
from celery.contrib.testing.worker import start_worker
from flask import Flask

from flask_notifications import Notifications

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

#: Fixtures that reach a server; a test that uses one (directly or through
#: ``app``, ``notifications``, ``celery_worker``...) needs that server.
SERVER_FIXTURES = frozenset({"redis_url", "amqp_url", "redis_server"})
#: Markers of tests that need a server of their own.
SERVER_MARKERS = frozenset({"browser"})
#: Parameters of backend fixtures that name a server's backend.
SERVER_BACKENDS = frozenset({"redis", "amqp"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a server with ``server``."""
    for item in items:
        if item.get_closest_marker("server") is not None:
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        # A fixture parametrised over backends reaches the server it names.
        callspec = getattr(item, "callspec", None)
        params = {value for value in callspec.params.values() if isinstance(value, str)} if callspec else set()
        if (
            fixtures & SERVER_FIXTURES
            or params & SERVER_BACKENDS
            or any(item.get_closest_marker(name) for name in SERVER_MARKERS)
        ):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a real Redis server; run-tests.sh makes sure one answers."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"No Redis at {REDIS_URL} ({exc}); run ./run-tests.sh, which starts one.")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def unique() -> str:
    """A name no other test (or test run) uses."""
    return f"fn-test-{uuid.uuid4().hex[:12]}"


def make_config(redis_url: str, unique: str, **overrides: Any) -> dict[str, Any]:
    """Config of an app on the real Redis, isolated by ``unique``."""
    config: dict[str, Any] = {
        "TESTING": True,
        "NOTIFICATIONS_BACKEND": "redis",
        "NOTIFICATIONS_REDIS_URL": redis_url,
        "NOTIFICATIONS_KEY_PREFIX": unique,
        "NOTIFICATIONS_RETRY_BACKOFF": 0.05,
        "NOTIFICATIONS_RETRY_BACKOFF_MAX": 0.2,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": unique,
    }
    config.update(overrides)
    return config


@pytest.fixture
def app(redis_url: str, unique: str, redis_client: redis.Redis[bytes]) -> Iterator[Flask]:
    app = Flask("test_app")
    app.config.update(make_config(redis_url, unique))
    yield app
    keys = list(redis_client.scan_iter(f"{unique}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def notifications(app: Flask) -> Iterator[Notifications]:
    ext = Notifications(app)
    with app.app_context():
        yield ext
    ext.get_backend(app).close()


@pytest.fixture
def client(app: Flask, notifications: Notifications) -> Any:
    return app.test_client()


WorkerFactory = Callable[..., AbstractContextManager[Any]]


@pytest.fixture
def celery_worker(notifications: Notifications, app: Flask) -> WorkerFactory:
    """Start a real Celery worker (in a thread of the test process) on the
    app's Celery, consuming the test's own queue from the real broker.

    It is a factory: register the hubs and consumers first, as a worker
    that imports the application would see them, then ``with
    celery_worker(): ...``.
    """

    @contextmanager
    def start(**options: Any) -> Iterator[Any]:
        celery = notifications.get_celery(app)
        options.setdefault("pool", "threads")
        options.setdefault("concurrency", 2)
        # start_worker makes its app Celery's current app; restore the
        # previous one so that later tests building a default app get a clean one.
        saved = (celery_state.default_app, getattr(celery_state._tls, "current_app", None))
        try:
            with start_worker(celery, perform_ping_check=False, loglevel="WARNING", **options) as worker:
                yield worker
        finally:
            celery_state.default_app, celery_state._tls.current_app = saved

    return start
