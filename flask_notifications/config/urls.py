"""The checks of the URL-valued keys: each URL is parsed the way the library
that connects to it parses it (redis-py for Redis, SQLAlchemy for a
database), without connecting, so that a malformed one is refused in
``init_app`` rather than at the first send. A message never holds the URL
itself: :mod:`.checks` shows the value with its password masked."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .kinds import is_none

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
_REDIS_EXPECTED = (
    "a Redis URL: redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path/to/socket, "
    "redis+sentinel://host:port[,host:port...]/<master name>[/<db>] or redis+cluster://host:port[,host:port...]"
)
_SQL_EXPECTED = (
    "a SQLAlchemy URL such as postgresql+psycopg://user@host/db or sqlite:///path/to/file.db, an Engine, or None"
)
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def _scheme(value: str) -> str:
    return value.partition("://")[0].lower() if "://" in value else ""


def check_redis_url(value: Any) -> Any:
    """Parse a Redis URL of a form that
    :func:`~flask_notifications.backends.redis_client.client_from_url`
    connects to, without connecting.

    :raises ValueError: it is none of them; the message says what is expected.
    """
    if is_none(value):
        return None
    if not isinstance(value, str):
        raise ValueError(_REDIS_EXPECTED)
    scheme = _scheme(value)
    if scheme not in REDIS_SCHEMES:
        raise ValueError(_REDIS_EXPECTED)
    if scheme in ("redis+sentinel", "redis+cluster"):
        _check_redis_nodes(value, scheme)
        return value
    from redis.connection import parse_url

    try:
        parse_url(value)
        if scheme != "unix":
            parts = urlsplit(value)
            parts.port  # noqa: B018 (a port that is not a number raises ValueError here)
            if not parts.hostname:
                raise ValueError("no host")
            if parts.path.strip("/") and not parts.path.strip("/").isdigit():
                raise ValueError(f"the database {parts.path.strip('/')!r} is not a number")
    except ValueError as exc:
        # redis-py's messages name the part that is wrong, never the URL.
        raise ValueError(f"{_REDIS_EXPECTED} ({_without_url(str(exc), value)})") from None
    return value


def _check_redis_nodes(value: str, scheme: str) -> None:
    parts = urlsplit(value)
    netloc = parts.netloc.rpartition("@")[2]
    for host in netloc.split(","):
        name, sep, port = host.strip().rpartition(":")
        if not (name if sep else port) or (sep and not port.isdigit()):
            raise ValueError(f"{_REDIS_EXPECTED}; {host!r} is not host:port")
    segments = [segment for segment in parts.path.split("/") if segment]
    if scheme == "redis+cluster" and segments not in ([], ["0"]):
        raise ValueError(f"{_REDIS_EXPECTED}; a Redis Cluster has only database 0")
    if scheme == "redis+sentinel" and (
        not segments or len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit())
    ):
        raise ValueError(f"{_REDIS_EXPECTED}; name the master after the sentinels")


def amqp_url(value: Any) -> Any:
    """An AMQP URL, or None."""
    expected = "an AMQP URL: amqp://[user:password@]host[:port]/[vhost] (or amqps://, pyamqp://), or None"
    if is_none(value):
        return None
    if not isinstance(value, str) or _scheme(value) not in _AMQP_SCHEMES:
        raise ValueError(expected)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a port that is not a number raises ValueError here)
    except ValueError as exc:
        raise ValueError(f"{expected} ({_without_url(str(exc), value)})") from None
    return value


def sql_url(value: Any) -> Any:
    """A SQLAlchemy URL whose dialect and driver are installed, an Engine
    (or anything else that is not a string, taken as one), or None.

    :raises ValueError: SQLAlchemy cannot parse it, has no such dialect, or
        its driver is not installed; the message names what to install.
    """
    if is_none(value):
        return None
    if not isinstance(value, str):
        return value
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError:
        raise ValueError(f"{_SQL_EXPECTED}; a database URL needs SQLAlchemy: pip install '.[inbox]'") from None
    if not _scheme(value):
        raise ValueError(f"{_SQL_EXPECTED}; it has no scheme (dialect://)")
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        # Both messages quote the URL, password included.
        raise ValueError(f"{_SQL_EXPECTED}; SQLAlchemy cannot parse it (is the port a number?)") from None
    name = url.drivername
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"{_SQL_EXPECTED}; SQLAlchemy has no dialect {name!r} (postgresql, postgresql+psycopg, sqlite, ...)"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(
            f"{_SQL_EXPECTED}; the driver of {name!r}, the module {exc.name or 'it imports'}, is not installed "
            "(for PostgreSQL: pip install 'psycopg[binary]' and postgresql+psycopg://)"
        ) from None
    return value


def ledger_url(value: Any) -> Any:
    """A Redis URL (the Redis ledger), a SQLAlchemy URL or Engine (the SQL
    ledger), or None."""
    if isinstance(value, str) and not is_none(value) and _scheme(value) in REDIS_SCHEMES:
        return check_redis_url(value)
    try:
        return sql_url(value)
    except ValueError as exc:
        raise ValueError(f"a Redis URL ({', '.join(s + '://' for s in REDIS_SCHEMES)}) or {exc}") from None


def vapid_subject(value: Any) -> Any:
    """A ``mailto:`` or ``https:`` URL, or None."""
    if is_none(value):
        return None
    if not isinstance(value, str) or not (
        (value.startswith("mailto:") and "@" in value) or (value.startswith("https://") and urlsplit(value).hostname)
    ):
        raise ValueError("a mailto: URL (mailto:admin@example.org) or an https:// URL, or None")
    return value


def _without_url(message: str, url: str) -> str:
    return message.replace(url, "<the URL>")
