"""The shared fixtures of the suite, and the guard that keeps its markers honest.

Every test gets its own key prefix and Celery queue (``unique``), so test
runs (and developers) sharing one Redis server never see each other's
messages, and the suite runs in parallel (pytest-xdist) as well as serially.

A test is marked by what it reaches (``pyproject.toml`` lists the markers):

- ``redis``, ``amqp``, ``postgres``: the shared Redis, RabbitMQ or PostgreSQL;
- ``subprocess``: it starts a process: a private redis-server, gunicorn, a
  Celery worker, an interpreter;
- ``browser``: it drives headless Chromium.

A test with none of them is a unit test, and the fast lane
(``./run-tests.sh --fast``) runs exactly those. The guard makes a marker
impossible to forget: a test without ``redis``, ``amqp``, ``postgres`` or
``browser`` that opens a TCP connection fails (allowed: a server it started
in its own process, and a port of :func:`~tests.helpers.free_port`, where
nothing listens), and one without ``subprocess`` or
``browser`` that starts a process fails; the fixtures that reach a service
(``redis_url``, ``amqp_url``, ``postgres_url``, ``private_redis``,
``gunicorn``...) fail a test that does not carry its marker.
"""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Notifications
from tests.helpers import (
    AMQP_URL,
    POSTGRES_URL,
    REDIS_URL,
    RedisServer,
    WorkerFactory,
    delete_keys,
    make_config,
    missing,
    running_worker,
)
from tests.helpers.waiting import FREE_PORTS
from tests.helpers.web_servers import Gunicorn, Server

#: The markers of what a test reaches over the network.
NETWORK_MARKERS = ("redis", "amqp", "postgres", "browser")
#: The markers of a test that starts processes.
PROCESS_MARKERS = ("subprocess", "browser")


def _marked(node: pytest.Item, *names: str) -> bool:
    return any(node.get_closest_marker(name) is not None for name in names)


def _require(request: pytest.FixtureRequest, fixture: str, *markers: str) -> None:
    """Fail a test that uses ``fixture`` without one of ``markers``."""
    missing_markers = [name for name in markers if request.node.get_closest_marker(name) is None]
    if missing_markers:
        pytest.fail(
            f"{request.node.nodeid} uses the {fixture} fixture: mark it "
            + ", ".join(f"pytest.mark.{name}" for name in missing_markers)
            + " (tests/conftest.py)",
            pytrace=False,
        )


# -- the guard -----------------------------------------------------------------------

#: Addresses that a socket of this process listens on: a test may connect to a
#: server it started in its own process (a werkzeug server, aiosmtpd).
_LISTENING: set[tuple[str, int]] = set()
_real_listen = socket.socket.listen
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_popen_init = subprocess.Popen.__init__


def _listen(self: socket.socket, *args: Any) -> None:
    _real_listen(self, *args)
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host, port = self.getsockname()[:2]
        _LISTENING.add((host, port))
        if host in ("0.0.0.0", "::"):
            _LISTENING.update({("127.0.0.1", port), ("::1", port), ("localhost", port)})


socket.socket.listen = _listen  # type: ignore[method-assign]


class UndeclaredReach(ConnectionRefusedError):
    """A unit test reached a server (or started a process) that its markers
    do not declare."""


@pytest.fixture(autouse=True)
def _reach_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test that reaches what its markers do not declare."""
    item = request.node
    attempts: list[str] = []
    if not _marked(item, *NETWORK_MARKERS):

        def check(address: Any) -> None:
            if not isinstance(address, tuple):
                return
            if (address[0], address[1]) in _LISTENING or address[1] in FREE_PORTS:
                return
            attempts.append(f"a TCP connection to {address[0]}:{address[1]}")
            raise UndeclaredReach(
                f"{item.nodeid} connected to {address[0]}:{address[1]}: mark it with the service it reaches "
                "(pytest.mark.redis, amqp, postgres; tests/conftest.py)"
            )

        def connect(self: socket.socket, address: Any) -> None:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                check(address)
            _real_connect(self, address)

        def connect_ex(self: socket.socket, address: Any) -> int:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                check(address)
            return _real_connect_ex(self, address)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    if not _marked(item, *PROCESS_MARKERS):

        def popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
            attempts.append(f"a process ({args!r})")
            raise UndeclaredReach(f"{item.nodeid} started {args!r}: mark it pytest.mark.subprocess")

        monkeypatch.setattr(subprocess.Popen, "__init__", popen_init)
    yield
    if attempts:
        # Raised where it happened, this may have been caught (a library that
        # retries, a health check that reports "down"): it fails here anyway.
        pytest.fail(f"{item.nodeid} reached what its markers do not declare: {attempts[0]}", pytrace=False)


# -- services --------------------------------------------------------------------------

_answered: dict[str, BaseException | None] = {}


def _redis_answers(url: str) -> BaseException | None:
    if url not in _answered:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            client.ping()
            _answered[url] = None
        except redis.exceptions.ConnectionError as exc:
            _answered[url] = exc
        finally:
            client.close()
    return _answered[url]


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of the shared Redis server; run-tests.sh makes sure one answers."""
    _require(request, "redis_url", "redis")
    error = _redis_answers(REDIS_URL)
    if error is not None:
        pytest.fail(f"No Redis at {REDIS_URL} ({error}); run ./run-tests.sh, which starts one.")
    return REDIS_URL


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest) -> str:
    """A RabbitMQ that answers, or a skip that says none does (a failure in CI)."""
    _require(request, "amqp_url", "amqp")
    from kombu import Connection

    if AMQP_URL not in _answered:
        conn = Connection(AMQP_URL, connect_timeout=2)
        try:
            conn.ensure_connection(max_retries=0)
            _answered[AMQP_URL] = None
        except Exception as exc:  # any failure to connect means: no server here
            _answered[AMQP_URL] = exc
        finally:
            conn.release()
    error = _answered[AMQP_URL]
    if error is not None:
        missing(f"no RabbitMQ answers at {AMQP_URL} ({error}); run ./run-tests.sh or set AMQP_URL")
    return AMQP_URL


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    """The URL of a PostgreSQL that answers, or a skip saying why not."""
    _require(request, "postgres_url", "postgres")
    import sqlalchemy as sa

    if POSTGRES_URL not in _answered:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _answered[POSTGRES_URL] = None
        except sa.exc.OperationalError as exc:
            _answered[POSTGRES_URL] = exc
        finally:
            engine.dispose()
    error = _answered[POSTGRES_URL]
    if error is not None:
        pytest.skip(f"No PostgreSQL answers at {POSTGRES_URL} ({str(error).strip()[:120]}); set INBOX_POSTGRES_URL.")
    return POSTGRES_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def unique() -> str:
    """A name no other test (or test run) uses."""
    return f"fn-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_keys(redis_client: redis.Redis[bytes], unique: str) -> Iterator[str]:
    """The test's key prefix on the shared Redis (``unique``): every key under
    it (the app's, its Celery queue's) is deleted after the test."""
    yield unique
    delete_keys(redis_client, unique)


# -- the app ---------------------------------------------------------------------------


@pytest.fixture
def app(redis_url: str, redis_keys: str) -> Flask:
    app = Flask("test_app")
    app.config.update(make_config(redis_url, redis_keys))
    return app


@pytest.fixture
def notifications(app: Flask) -> Iterator[Notifications]:
    ext = Notifications(app)
    with app.app_context():
        yield ext
    ext.get_backend(app).close()


@pytest.fixture
def client(app: Flask, notifications: Notifications) -> Any:
    return app.test_client()


@pytest.fixture
def celery_worker(notifications: Notifications, app: Flask) -> WorkerFactory:
    """Start a real Celery worker (in a thread of the test process) on the
    app's Celery, consuming the test's own queue from the real broker.

    It is a factory: register the hubs and consumers first, as a worker
    that imports the application would see them, then ``with
    celery_worker(): ...``.
    """

    def start(**options: Any) -> Any:
        return running_worker(notifications.get_celery(app), **options)

    return start


# -- servers a test starts -------------------------------------------------------------------


@pytest.fixture
def private_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``private_redis(persistent=False, args=())``: a started ``redis-server``
    of the test's own on a free port, which it may kill, restart or pause
    (SIGSTOP); all are removed after the test. ``persistent`` keeps data in an
    append-only file, so a restart keeps it."""
    _require(request, "private_redis", "redis", "subprocess")
    servers: list[RedisServer] = []

    def start(*, persistent: bool = False, args: list[str] | None = None) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory, persistent=persistent, args=args)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.remove()


@pytest.fixture
def gunicorn(
    request: pytest.FixtureRequest, redis_url: str, redis_keys: str, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    """``gunicorn(sndbuf=0, kind="gunicorn", **config)``: the SSE app of
    tests/apps/sse_app.py under gunicorn (one worker) with the worker class
    ``flask_notifications.gunicorn.GeventWorker``, or ``kind="gunicorn-gevent"``
    for gunicorn's own ``-k gevent``, configured by
    :func:`~tests.helpers.make_config` and ``config`` (``NOTIFICATIONS_REDIS_URL``
    points it elsewhere), its standard error in ``server-N.log``; its
    ``backend`` publishes from this process. All are killed after the test."""
    _require(request, "gunicorn", "redis", "subprocess")
    servers: list[Server] = []

    def start(*, sndbuf: int = 0, kind: str = "gunicorn", **config: Any) -> Server:
        settings = make_config(redis_url, redis_keys, SECRET_KEY=redis_keys, **config)
        server = Server(kind, settings, sndbuf=sndbuf, log=tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def gunicorn_deployment(
    request: pytest.FixtureRequest, redis_url: str, redis_keys: str, tmp_path: Path
) -> Iterator[Callable[..., Gunicorn]]:
    """``gunicorn_deployment(workers=2, graceful_timeout=30, env=None,
    worker_class="gevent", **config)``: the SSE app under gunicorn as deployed,
    with several workers and the hooks of the package in its configuration
    file; the test may signal its master. All are stopped after the test."""
    _require(request, "gunicorn_deployment", "redis", "subprocess")
    servers: list[Gunicorn] = []

    def start(
        *,
        workers: int = 2,
        graceful_timeout: int = 30,
        env: dict[str, str] | None = None,
        worker_class: str = "gevent",
        **config: Any,
    ) -> Gunicorn:
        directory = tmp_path / f"gunicorn-{len(servers)}"
        directory.mkdir()
        settings = make_config(redis_url, redis_keys, **config)
        server = Gunicorn(
            settings, directory, workers=workers, graceful_timeout=graceful_timeout, env=env, worker_class=worker_class
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- the fault app ---------------------------------------------------------------------------

FAULT_APP = "tests.apps.fault_app"


@pytest.fixture
def fault_env(
    request: pytest.FixtureRequest, redis_url: str, redis_keys: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The environment of the fault app (tests/apps/fault_app.py) for this
    test: the shared Redis, the test's prefix and queue, ``tmp_path`` as its
    scratch directory. A test overrides a key (``FAULT_REDIS_URL``,
    ``FAULT_CLAIM_TIMEOUT``...) with ``fault_env.update(...)`` before it
    uses ``fault_app``; worker processes take the same environment."""
    _require(request, "fault_env", "redis")
    env = {
        "FAULT_REDIS_URL": redis_url,
        "FAULT_QUEUE": redis_keys,
        "FAULT_PREFIX": redis_keys,
        "FAULT_DIR": str(tmp_path),
        "FAULT_VISIBILITY_TIMEOUT": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def fault_app(fault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fault app, imported afresh in the test process with ``fault_env``:
    the sending side of a test whose workers run in processes of their own."""
    for key, value in fault_env.items():
        monkeypatch.setenv(key, value)
    sys.modules.pop(FAULT_APP, None)
    module = importlib.import_module(FAULT_APP)
    yield module
    module.notifications.get_backend(module.app).close()
    # Its receiver SIGKILLs the process that runs a consumer while the
    # marker exists: never the test process of later tests.
    from flask_notifications import signals

    signals.consumer_succeeded.disconnect(module.die_after_complete)
    sys.modules.pop(FAULT_APP, None)
