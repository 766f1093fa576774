"""Fixtures of the inbox tests: each runs on SQLite and on the real
PostgreSQL (``INBOX_POSTGRES_URL``, by default the local server's ``test``
database), in a table of its own, so parallel runs never collide. Without a
PostgreSQL server the PostgreSQL half skips, saying why."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.inbox import Inbox

POSTGRES_URL = os.environ.get("INBOX_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a PostgreSQL that answers, or a skip saying why not."""
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"No PostgreSQL answers at {POSTGRES_URL} ({str(exc.orig).strip()[:120]}); set INBOX_POSTGRES_URL.")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def inbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for the inbox: a SQLite file, or the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def table_name(unique: str) -> str:
    return "inbox_" + unique.replace("-", "_")


@pytest.fixture
def inbox(app: Flask, notifications: Notifications, inbox_url: str, unique: str) -> Iterator[Inbox]:
    """The inbox of the test app, its table created, dropped at the end."""
    app.config["NOTIFICATIONS_INBOX_URL"] = inbox_url
    app.config["NOTIFICATIONS_INBOX_TABLE"] = table_name(unique)
    inbox = notifications.inbox
    inbox.create_all()
    yield inbox
    with app.app_context():
        inbox.drop_all()
        inbox.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` once :meth:`start` is
    called; until then nothing listens there, as with a database that is down."""

    def __init__(self, target: tuple[str, int]) -> None:
        from ..helpers import free_port

        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for sock in self._sockets:
            sock.close()
