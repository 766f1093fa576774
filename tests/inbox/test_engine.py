"""The inbox answers within a bound when its database does not (issue 22):
connect, statement and pool timeouts on the engine the inbox creates, tried
against a real PostgreSQL behind a proxy that goes silent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Event, Notifications, signals
from flask_notifications.errors import ConfigurationError, InboxUnavailableError
from flask_notifications.inbox import Inbox, define_table, define_versions_table, inbox_blueprint
from flask_notifications.inbox.consumer import InboxConsumer
from tests.helpers import WorkerFactory, wait_for
from tests.helpers.tcp_proxy import TcpProxy
from tests.inbox.conftest import table_name

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

PREFIX = "/notifications/inbox"
UNAVAILABLE = {"error": "The notification inbox is unavailable; try again shortly."}
#: Every route of the blueprint, with a body for the POSTs.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/", None),
    ("GET", "/count", None),
    ("POST", "/read", {"ids": [1]}),
    ("POST", "/unread", {"ids": [1]}),
    ("POST", "/read-all", {}),
    ("POST", "/seen", {}),
    ("POST", "/archive", {"ids": [1]}),
    ("POST", "/unarchive", {"ids": [1]}),
    ("POST", "/delete", {"ids": [1]}),
]
#: How long a test client waits for an answer: the point is that one comes.
CLIENT_TIMEOUT = 10.0


def call(app: Flask, routes: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """Call ``routes`` at once, each from a client of its own, and return
    what each answered within :data:`CLIENT_TIMEOUT`: ``(status, json)``,
    or nothing for a route that got no answer."""
    answers: dict[str, Any] = {}

    def one(method: str, path: str, body: Any) -> None:
        response = app.test_client().open(PREFIX + path, method=method, json=body)
        answers[path] = (response.status_code, response.json)

    threads = [threading.Thread(target=one, args=route, daemon=True) for route in routes]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return dict(answers)


def all_unavailable(routes: list[tuple[str, str, Any]]) -> dict[str, Any]:
    return {path: (503, UNAVAILABLE) for _, path, _ in routes}


@pytest.fixture
def tables(postgres_url: str, unique: str) -> Iterator[sa.Table]:
    """The inbox tables, made on the real server, dropped at the end."""
    metadata = sa.MetaData()
    table = define_table(metadata, table_name(unique))
    define_versions_table(metadata, table.name)
    engine = sa.create_engine(postgres_url)
    metadata.create_all(engine)
    yield table
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy.in_front_of(postgres_url, 5432)
    yield proxy
    proxy.close()


@pytest.fixture
def web(
    app: Flask, notifications: Notifications, postgres_url: str, tables: sa.Table, proxy: TcpProxy
) -> Iterator[Inbox]:
    """The inbox of an app serving the blueprint to "alice", on the real
    PostgreSQL through ``proxy``."""
    app.config["NOTIFICATIONS_INBOX_URL"] = proxy.url_through(postgres_url)
    app.config["NOTIFICATIONS_INBOX_TABLE"] = tables.name
    app.config["SECRET_KEY"] = "inbox-tests"
    app.register_blueprint(inbox_blueprint, url_prefix=PREFIX)
    notifications.inbox.user_loader(lambda: "alice")
    try:
        yield notifications.inbox
    finally:
        proxy.close()  # a call still waiting on the proxy fails now
        notifications.inbox.close()


def test_a_server_that_never_answers_is_503_on_every_route(app: Flask, web: Inbox, proxy: TcpProxy) -> None:
    proxy.silence()
    assert call(app, ROUTES) == all_unavailable(ROUTES)
    assert proxy.accepted >= len(ROUTES)


def test_a_pooled_connection_that_goes_silent_is_503_on_every_route(app: Flask, web: Inbox, proxy: TcpProxy) -> None:
    web.add(Event(None, "comment", "Hi", "", recipients=["alice"]), ["alice"], delivery_id="d1")
    assert call(app, [ROUTES[1]]) == {"/count": (200, {"unread_count": 1, "unseen_count": 1})}
    assert proxy.accepted == 1  # the pool keeps that one connection
    proxy.silence()
    # The pooled connection's pre-ping is cut, and the one new connection
    # that replaces it times out.
    assert call(app, [ROUTES[1]]) == all_unavailable([ROUTES[1]])
    assert proxy.accepted == 2
    assert call(app, ROUTES) == all_unavailable(ROUTES)


def test_a_server_that_stops_answering_mid_transaction_is_503(app: Flask, web: Inbox, proxy: TcpProxy) -> None:
    web.add(Event(None, "comment", "Hi", "", recipients=["alice"]), ["alice"], delivery_id="d1")
    assert call(app, [ROUTES[1]])["/count"][0] == 200

    def silence(*args: Any) -> None:
        proxy.silence()  # after the inbox's own pre-ping: the statements hang

    sa.event.listen(web.engine, "checkout", silence)
    try:
        assert call(app, [ROUTES[4]]) == all_unavailable([ROUTES[4]])
    finally:
        sa.event.remove(web.engine, "checkout", silence)
    assert proxy.accepted == 1
    proxy.answer()
    assert web.unread_count("alice") == 1  # the cut transaction changed nothing


def test_a_table_locked_by_another_transaction_is_503(
    app: Flask, web: Inbox, postgres_url: str, tables: sa.Table
) -> None:
    # The server answers, but the statement waits for a lock: PostgreSQL's
    # statement_timeout ends it.
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'LOCK TABLE "{tables.name}" IN ACCESS EXCLUSIVE MODE'))
            answers = call(app, [ROUTES[1], ROUTES[4]])
        assert answers == all_unavailable([ROUTES[1], ROUTES[4]])
    finally:
        engine.dispose()


@pytest.mark.subprocess
def test_events_sent_while_the_database_is_silent_are_stored_once_it_answers(
    app: Flask,
    notifications: Notifications,
    web: Inbox,
    proxy: TcpProxy,
    tables: sa.Table,
    postgres_url: str,
    celery_worker: WorkerFactory,
) -> None:
    hub = notifications.create_hub("InboxSilent")
    hub.register_consumer(InboxConsumer())
    assert web.unread_count("alice") == 0  # a pooled connection, to go silent
    failures: list[BaseException] = []
    stored: list[Event] = []

    def failed(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        failures.append(exception)

    def succeeded(sender: Any, event: Event, **kwargs: Any) -> None:
        stored.append(event)

    signals.consumer_failed.connect(failed)
    signals.consumer_succeeded.connect(succeeded)
    try:
        with celery_worker():
            proxy.silence()
            sent = {
                notifications.send(Event(None, "comment", f"n{n}", "", recipients=["alice", "bob"])).delivery_id
                for n in range(3)
            }
            wait_for(lambda: len(failures) >= 3, timeout=30)
            proxy.answer()
            wait_for(lambda: len(stored) == 3)
    finally:
        signals.consumer_failed.disconnect(failed)
        signals.consumer_succeeded.disconnect(succeeded)
    assert failures and all(isinstance(exc, InboxUnavailableError) for exc in failures)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(tables.c.recipient, tables.c.delivery_id)).all()
    finally:
        engine.dispose()
    assert sorted(tuple(row) for row in rows) == sorted((user, d) for d in sent for user in ("alice", "bob"))
    assert notifications.dead_letters() == []


# -- the bounds reach the connections -----------------------------------------


def test_postgresql_connections_get_the_statement_timeout(
    app: Flask, notifications: Notifications, postgres_url: str
) -> None:
    app.config["NOTIFICATIONS_INBOX_URL"] = postgres_url + "?options=-csearch_path%3Dpg_catalog,public"
    try:
        with notifications.inbox.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "2s"
            assert conn.execute(sa.text("SHOW search_path")).scalar_one() == "pg_catalog,public"
        notifications.inbox.close()
        app.config["NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT"] = 0.25
        with notifications.inbox.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "250ms"
    finally:
        notifications.inbox.close()


def test_sqlite_connections_get_the_busy_timeout(app: Flask, notifications: Notifications, tmp_path: Any) -> None:
    app.config["NOTIFICATIONS_INBOX_URL"] = f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    app.config["NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT"] = 1.5
    app.config["NOTIFICATIONS_INBOX_POOL_TIMEOUT"] = 0.5
    try:
        engine = notifications.inbox.engine
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 1500
        assert engine.pool.timeout() == 0.5  # type: ignore[attr-defined]
    finally:
        notifications.inbox.close()


@pytest.mark.parametrize("key", ["CONNECT", "STATEMENT", "POOL"])
@pytest.mark.parametrize("value", [0, -1, "2", True, float("inf")])
def test_bad_timeouts_are_refused_naming_the_key(
    app: Flask, notifications: Notifications, tmp_path: Any, key: str, value: Any
) -> None:
    app.config["NOTIFICATIONS_INBOX_URL"] = f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    app.config[f"NOTIFICATIONS_INBOX_{key}_TIMEOUT"] = value
    with pytest.raises(ConfigurationError, match=f"NOTIFICATIONS_INBOX_{key}_TIMEOUT"):
        _ = notifications.inbox.engine
