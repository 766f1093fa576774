"""The Redis client that ``NOTIFICATIONS_REDIS_URL`` names: one server, a
master managed by Redis Sentinel, or a Redis Cluster.

``redis://``, ``rediss://`` and ``unix://`` URLs go to
:meth:`redis.Redis.from_url` unchanged. Two more forms name replicated or
sharded deployments, each listing several hosts so that one of them may be
down:

``redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>[/<db>]``
    The master that the sentinels at those addresses (port 26379 if none
    is given) agree on, found again after every reconnection, so a failover
    moves every connection to the new master. The password is the
    master's; ``?sentinel_password=...`` is the sentinels' own, if they
    have one.

``redis+cluster://[[user]:password@]host:port[,host:port...][/0]``
    A Redis Cluster, discovered from any of the nodes listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from ..errors import BackendError, ConfigurationError

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"

#: A client of one server (or a Sentinel master), or of a Redis Cluster.
RedisClient: TypeAlias = "redis.Redis[bytes] | RedisCluster[bytes]"


def _hosts(netloc: str, default_port: int, url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The ``host:port`` list and the credentials of a multi-host netloc."""
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    hosts = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = port, str(default_port)
        if not host or not port.isdigit():
            raise ConfigurationError(f"{url!r}: {part!r} is not host:port.")
        hosts.append((host, int(port)))
    return hosts, username, password


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return url.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2])


def client_from_url(url: str, **options: Any) -> RedisClient:
    """Build the client ``url`` names.

    :param url: a ``redis://``, ``rediss://``, ``unix://``,
        ``redis+sentinel://`` or ``redis+cluster://`` URL.
    :param options: keyword arguments of every connection, such as
        ``socket_connect_timeout``.
    :raises ConfigurationError: the URL is not one of those forms.
    """
    scheme = url.partition("://")[0].lower()
    if scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        return redis.Redis.from_url(url, **options)
    parts = urlsplit(url)
    shown = _redacted(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    segments = [segment for segment in parts.path.split("/") if segment]
    if scheme == CLUSTER_SCHEME:
        hosts, username, password = _hosts(parts.netloc, 6379, shown)
        if segments not in ([], ["0"]):
            raise ConfigurationError(f"{shown!r}: a Redis Cluster has only database 0.")
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in hosts],
            username=username,
            password=password,
            **options,
        )
    hosts, username, password = _hosts(parts.netloc, 26379, shown)
    if not segments or len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ConfigurationError(
            f"{shown!r}: name the master and optionally the database, as "
            "redis+sentinel://host:26379,host:26379/<master name>/<db>."
        )
    sentinel_options = {key: value for key, value in options.items() if key.startswith("socket_")}
    if "sentinel_password" in query:
        sentinel_options["password"] = query["sentinel_password"]
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_options)
    db = int(segments[1]) if len(segments) == 2 else 0
    client: redis.Redis[bytes] = sentinel.master_for(
        unquote(segments[0]), db=db, username=username, password=password, **options
    )
    return client


def client_or_url(client: RedisClient | None, url: str) -> Any:
    """``client``, or else a client of ``url`` with the timeouts that every
    Redis part of the package uses (5 s to connect, a health check after
    30 s idle)."""
    return client if client is not None else client_from_url(url, socket_connect_timeout=5, health_check_interval=30)


def guarded(what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; a Redis error becomes a :class:`~flask_notifications.errors.BackendError`
    that names ``what`` failed (``"publish"``, ``"claim"``)."""
    try:
        return func(*args, **kwargs)
    except redis.exceptions.RedisError as exc:
        raise BackendError(f"Redis {what} failed: {exc}") from exc


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def is_client(candidate: object) -> bool:
    """Whether ``candidate`` is a Redis client (of a cluster or not), such as
    a ``broker`` passed to ``init_app``."""
    return isinstance(candidate, redis.Redis | RedisCluster)


def answers_ping(client: Any) -> bool:
    """Whether the server of ``client`` answers ``PING``."""
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


def decode(value: bytes | str) -> str:
    """A reply's bytes as text (clients built with ``decode_responses`` give text)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def field(fields: Mapping[Any, Any] | list[Any], name: str = "d") -> str:
    """The value of ``name`` in a stream entry's fields, ``""`` if absent."""
    if isinstance(fields, list):
        # A raw reply, as a cluster transaction returns it: [name, value, ...].
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    value = fields.get(name.encode(), fields.get(name))
    return decode(value) if value is not None else ""
