"""The engines the inbox and the SQL ledger create for themselves, and the
bounds on how long they wait for their database.

Three bounds, each a configuration key:

- ``NOTIFICATIONS_INBOX_CONNECT_TIMEOUT``: opening a connection
  (libpq's ``connect_timeout``, which psycopg enforces on the client);
- ``NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT``: one statement, commit or
  pre-ping. PostgreSQL enforces it (``statement_timeout``) while it answers;
  a server that accepts connections but never answers cannot, and neither
  TCP keepalives nor ``tcp_user_timeout`` notice it (its kernel still
  acknowledges every packet). So a watchdog thread shuts down the socket of a
  connection whose command has been running for longer, which makes the
  driver raise at once. On SQLite it is the busy timeout;
- ``NOTIFICATIONS_INBOX_POOL_TIMEOUT``: waiting for a free pooled connection.

A call past a bound raises :class:`~flask_notifications.errors.InboxUnavailableError`
(``503`` in the blueprint; a retry in the consumer). Engines the application
passes in (an ``Engine``, or Flask-SQLAlchemy's) are left as they are.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)

#: An execution option: a connection that sets it is not bound by the
#: statement timeout (``purge`` deletes what may be millions of rows).
UNBOUNDED = "notifications_inbox_unbounded"

#: Drivers whose connections take libpq's parameters and expose their socket
#: and transaction status, which the watchdog needs.
_LIBPQ_DRIVERS = ("psycopg", "psycopg2")
#: libpq's PQTRANS_ACTIVE: a command is in progress.
_ACTIVE = 1
#: Seconds the watchdog thread lingers with nothing to watch before it ends.
_LINGER = 60.0
#: SQLite's longest busy timeout, for "no bound".
_SQLITE_FOREVER_MS = 2**31 - 1
_GUARD = "flask_notifications.inbox.guard"
_FRESH = "flask_notifications.inbox.fresh"


@dataclass(frozen=True)
class Timeouts:
    """The inbox's bounds, in seconds; ``None`` is no bound.

    :param connect: opening a connection.
    :param statement: one statement, commit or pre-ping.
    :param pool: waiting for a pooled connection.
    """

    connect: float | None
    statement: float | None
    pool: float | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Timeouts:
        """Read and check the ``NOTIFICATIONS_INBOX_*_TIMEOUT`` keys.

        :raises ConfigurationError: a key is not a positive number or ``None``.
        """
        return cls(
            connect=_seconds(config, "NOTIFICATIONS_INBOX_CONNECT_TIMEOUT"),
            statement=_seconds(config, "NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT"),
            pool=_seconds(config, "NOTIFICATIONS_INBOX_POOL_TIMEOUT"),
        )


def _seconds(config: Mapping[str, Any], key: str) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(
            f"{key} is a number of seconds greater than 0, or None for no bound; not {value!r:.40}."
        )
    return float(value)


def create_engine(url: str | sa.URL, timeouts: Timeouts | None = None) -> sa.Engine:
    """An engine for ``url`` whose waits are bound by ``timeouts``.

    On PostgreSQL through psycopg or psycopg2, a ``connect_timeout`` or an
    ``options`` in the URL are kept: the URL's ``connect_timeout`` wins over
    ``timeouts.connect``, and the URL's ``options`` come after the statement
    timeout, so a ``statement_timeout`` there wins too.
    """
    timeouts = timeouts or Timeouts(None, None, None)
    url = sa.make_url(url)
    backend, driver = url.get_backend_name(), url.get_driver_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    memory = backend == "sqlite" and url.database in (None, "", ":memory:")
    if timeouts.pool is not None and not memory:
        kwargs["pool_timeout"] = timeouts.pool
    watched = backend == "postgresql" and driver in _LIBPQ_DRIVERS
    if watched:
        connect_args: dict[str, Any] = {}
        if timeouts.connect is not None and "connect_timeout" not in url.query:
            # libpq counts whole seconds, and takes 2 for anything less.
            connect_args["connect_timeout"] = max(2, math.ceil(timeouts.connect))
        if timeouts.statement is not None:
            options = [f"-c statement_timeout={max(1, round(timeouts.statement * 1000))}"]
            theirs = url.query.get("options")
            options += [theirs] if isinstance(theirs, str) else list(theirs or ())
            connect_args["options"] = " ".join(options)
            # The watchdog's own pre-ping replaces SQLAlchemy's, which it
            # could not watch: that one runs before any event fires.
            kwargs["pool_pre_ping"] = False
        kwargs["connect_args"] = connect_args
    engine = sa.create_engine(url, **kwargs)
    if backend == "sqlite":
        busy = _SQLITE_FOREVER_MS if timeouts.statement is None else max(1, round(timeouts.statement * 1000))
        sa.event.listen(engine, "connect", _SqlitePragmas(busy))
    elif watched and timeouts.statement is not None:
        _watch(engine, timeouts.statement)
    return engine


class _SqlitePragmas:
    """WAL lets the web process read while a worker writes; the busy timeout
    makes a writer wait that long for the lock instead of failing at once."""

    def __init__(self, busy_ms: int) -> None:
        self.busy_ms = busy_ms

    def __call__(self, dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(self.busy_ms)}")
        cursor.close()


class _Guard:
    """What the watchdog knows of one DBAPI connection."""

    __slots__ = ("__weakref__", "connection", "timeout")

    def __init__(self, dbapi_connection: Any, timeout: float) -> None:
        self.connection = weakref.ref(dbapi_connection)
        self.timeout = timeout

    def stop(self) -> bool:
        """Shut the connection's socket down if a command is still running
        on it, so that the driver's wait ends with a lost connection.

        Closing the connection instead would free the driver's state under
        the thread that waits in it; a shutdown only wakes that thread.
        """
        connection = self.connection()
        if connection is None:
            return False
        try:
            if connection.info.transaction_status != _ACTIVE:
                return False  # it answered in time; the deadline was stale
            with socket.socket(fileno=os.dup(connection.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # a connection closed meanwhile: the watchdog must go on
            logger.debug("Could not stop a stalled inbox connection.", exc_info=True)
            return False
        return True


class _Watchdog:
    """One thread per process that stops the connections whose command
    outlives its deadline. A deadline is set when a command starts and
    cleared when it ends, by the engine's events."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[_Guard, float] = {}
        self._thread: threading.Thread | None = None

    def arm(self, guard: _Guard) -> None:
        with self._cond:
            idle = not self._armed
            self._armed[guard] = time.monotonic() + guard.timeout
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="notifications-inbox-watchdog", daemon=True)
                self._thread.start()
            elif idle:
                self._cond.notify()

    def disarm(self, guard: _Guard) -> None:
        with self._cond:
            self._armed.pop(guard, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._armed:
                    if not self._cond.wait(_LINGER) and not self._armed:
                        self._thread = None
                        return
                    continue
                now = time.monotonic()
                for guard, deadline in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[guard]
                        if guard.stop():
                            logger.warning(
                                "The inbox database did not answer within %ss; its connection was dropped "
                                "(NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT).",
                                guard.timeout,
                            )
                if self._armed:
                    self._cond.wait(max(0.0, min(self._armed.values()) - now))


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    # A forked child (a prefork Celery pool, gunicorn) has no watchdog thread
    # and must not inherit the parent's lock or deadlines.
    os.register_at_fork(after_in_child=_WATCHDOG._reset)


def _guard_of(info: Mapping[str, Any] | None) -> _Guard | None:
    if info is None:
        return None
    guard = info.get(_GUARD)
    return guard if isinstance(guard, _Guard) else None


def _connection_guard(conn: sa.Connection) -> _Guard | None:
    if conn.invalidated or conn.closed:
        return None
    return _guard_of(conn.info)


def _watch(engine: sa.Engine, timeout: float) -> None:
    """Bound every command of ``engine``'s connections by ``timeout``."""
    dialect = engine.dialect

    def connect(dbapi_connection: Any, record: Any) -> None:
        record.info[_GUARD] = _Guard(dbapi_connection, timeout)
        record.info[_FRESH] = True

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        # SQLAlchemy's pessimistic ping, watched: a pooled connection whose
        # server stopped answering fails here instead of hanging.
        guard = _guard_of(record.info)
        if record.info.pop(_FRESH, False) or guard is None:
            return
        _WATCHDOG.arm(guard)
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                # The pool's other connections go to the same server.
                raise sa.exc.InvalidatePoolError(f"The inbox database did not answer a ping: {exc}") from exc
            raise
        finally:
            _WATCHDOG.disarm(guard)

    def start(conn: sa.Connection) -> None:
        guard = _connection_guard(conn)
        if guard is not None and not conn.get_execution_options().get(UNBOUNDED):
            _WATCHDOG.arm(guard)

    def end(conn: sa.Connection) -> None:
        guard = _connection_guard(conn)
        if guard is not None:
            _WATCHDOG.disarm(guard)

    def before_cursor_execute(conn: sa.Connection, cursor: Any, statement: Any, *args: Any) -> None:
        start(conn)

    def after_cursor_execute(conn: sa.Connection, cursor: Any, statement: Any, *args: Any) -> None:
        end(conn)

    def handle_error(context: Any) -> None:
        if context.connection is not None:
            end(context.connection)

    def reset(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
        guard = _guard_of(record.info)
        if guard is not None:
            _WATCHDOG.arm(guard)

    def returned(dbapi_connection: Any, record: Any) -> None:
        guard = _guard_of(getattr(record, "info", None))
        if guard is not None:
            _WATCHDOG.disarm(guard)

    def invalidated(dbapi_connection: Any, record: Any, exception: Any) -> None:
        returned(dbapi_connection, record)

    sa.event.listen(engine, "connect", connect)
    sa.event.listen(engine, "checkout", checkout)
    sa.event.listen(engine, "before_cursor_execute", before_cursor_execute)
    sa.event.listen(engine, "after_cursor_execute", after_cursor_execute)
    sa.event.listen(engine, "handle_error", handle_error)
    # A commit or rollback stays armed until the connection goes back to
    # the pool; the watchdog leaves alone a connection whose command ended.
    sa.event.listen(engine, "commit", start)
    sa.event.listen(engine, "rollback", start)
    sa.event.listen(engine.pool, "reset", reset)
    sa.event.listen(engine.pool, "checkin", returned)
    sa.event.listen(engine.pool, "close", returned)
    sa.event.listen(engine.pool, "invalidate", invalidated)


def engine_for(
    app: Flask, configured: object, sqlite_file: str, timeouts: Timeouts | None = None
) -> tuple[sa.Engine, bool]:
    """The engine a setting names, and whether it was created here (so the
    caller disposes of it).

    :param configured: a SQLAlchemy URL or :class:`~sqlalchemy.Engine`;
        ``None`` uses the app's Flask-SQLAlchemy engine if it has one, else
        SQLite in the instance folder.
    :param sqlite_file: the name of that SQLite file.
    :param timeouts: the bounds of an engine created here (see
        :func:`create_engine`); an engine given is left as it is.
    """
    if isinstance(configured, sa.Engine):
        return configured, False
    if not configured and "sqlalchemy" in app.extensions:
        with app.app_context():
            engine: sa.Engine = app.extensions["sqlalchemy"].engine
        return engine, False
    if not configured:
        os.makedirs(app.instance_path, exist_ok=True)
        configured = "sqlite:///" + os.path.join(app.instance_path, sqlite_file)
    return create_engine(str(configured), timeouts), True
