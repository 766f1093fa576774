"""Access control and hostile requests at the SSE endpoint, served by gevent
as in production:

- a per-user stream never carries another user's event, for any recipients
  and user names (hypothesis), live or replayed;
- an unauthorized stream is 403, before any byte is streamed;
- a client address over ``NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT`` gets
  429, and its place is freed when a stream closes;
- whatever arrives as ``Last-Event-ID`` (header or query), the answer is a
  2xx or a 4xx, never a 5xx.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_notifications import Event
from flask_notifications.event_hub import hub_id_for
from tests.helpers import EXAMPLES, make_config, report, wait_for
from tests.helpers.config import REDIS_URL
from tests.helpers.redis_servers import delete_keys
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.subprocess]

PRIVATE, NEWS, CLOSED = hub_id_for("private"), hub_id_for("news"), hub_id_for("closed")


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture
def server_factory(redis_keys: str, redis_url: str, unique: str, redis_client: redis.Redis[bytes]) -> Iterator[Any]:
    servers: list[Any] = []

    def start(**config: Any) -> Any:
        server = Server("gevent", make_config(redis_url, unique, SECRET_KEY=unique, **config))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[Server]:
    """One server, without a per-client cap, for the tests of this module that
    need no configuration of their own: a server a test costs more than most
    of these tests. Its key prefix is its own, deleted at the end."""
    prefix = f"fn-test-{uuid.uuid4().hex[:12]}"
    server = Server(
        "gevent", make_config(REDIS_URL, prefix, SECRET_KEY=prefix, NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None)
    )
    yield server
    server.kill()
    client: redis.Redis[bytes] = redis.Redis.from_url(REDIS_URL)
    try:
        delete_keys(client, prefix)
    finally:
        client.close()


#: User names that differ from another only in case, spacing, Unicode form,
#: or that look like separators or wildcards.
USERS = ["alice", "Alice", "alice ", "al\u0131ce", "bob", "b\u00f6b", "bo\u0308b", "*", "", "alice,bob", "0"]


def test_a_per_user_stream_never_carries_another_users_event(redis_url: str, shared_server: Server) -> None:
    server = shared_server
    url = f"/notifications/{PRIVATE}/events"
    assert server.status(url) == 403
    assert server.status(f"/notifications/{CLOSED}/events", headers=server.login("alice")) == 403
    viewers = [user for user in USERS if user.strip() and "," not in user]
    cookies = {user: server.login(quote(user, safe="")) for user in viewers}
    tried = {"examples": 0, "events": 0}

    #: Each example opens a stream per user and replays it: fewer examples.
    @_settings(max(10, EXAMPLES // 10))
    @given(st.lists(st.lists(st.sampled_from(USERS), max_size=4), min_size=1, max_size=10))
    def check(batch: list[list[str]]) -> None:
        tried["examples"] += 1
        tried["events"] += len(batch) + 1
        clients = {user: server.stream(url, headers=cookies[user]) for user in viewers}
        try:
            starts = {user: client.wait_open() for user, client in clients.items()}
            run = uuid.uuid4().hex[:8]
            sent = [Event(f"{run}-{n}", "private", "t", "b", recipients=rcpt) for n, rcpt in enumerate(batch)]
            # A last event to everyone marks the end of the batch on every stream.
            sent.append(Event(f"{run}-end", "private", "t", "b", recipients=viewers))
            for event in sent:
                server.publish(PRIVATE, event)
            for user, client in clients.items():
                expected = [e["event_id"] for e in sent if user in e["recipients"]]
                live = client.take(len(expected))
                assert [json.loads(e.data)["event_id"] for e in live] == expected
                # Replayed from the history through the same filter.
                with server.stream(url, headers=cookies[user], last_event_id=starts[user]) as again:
                    replayed = again.take(len(expected))
                assert [json.loads(e.data)["event_id"] for e in replayed] == expected
        finally:
            for client in clients.values():
                client.close()

    check()
    report("per-user streams", examples=tried["examples"], events=tried["events"], users=len(viewers))


def test_connections_over_the_per_client_cap_get_429(server_factory: Any) -> None:
    server = server_factory(NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=3)
    url = f"/notifications/{NEWS}/events"
    streams = [server.stream(url) for _ in range(3)]
    try:
        assert [s.status for s in streams] == [200] * 3
        refused = server.stream(url)
        assert refused.status == 429 and int(refused.headers["retry-after"]) >= 1
        refused.close()
        streams.pop().close()
        # The server notices the hang-up and frees the place.
        wait_for(lambda: server.stats()["connections"] == 2)
        streams.append(server.stream(url))
        assert streams[-1].status == 200
        assert server.stats()["refused"] == 1
    finally:
        for stream in streams:
            stream.close()


def _status(port: int, request: bytes) -> int:
    """The status line's code of a raw request; the connection is closed at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


header_values = (
    st.binary(max_size=64).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    | st.text(st.characters(exclude_categories=()), max_size=64).map(
        lambda t: t.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")
    )
    | st.sampled_from([b"0-0", b"1-1", b"-1-0", b"18446744073709551615-0", b"1" * 50 + b"-0", b"1-", b"-", b"\x00"])
    | st.integers(1_000, 20_000).map(lambda n: b"9" * n)
    # Ids shaped right, within what Redis takes; its edges are the known
    # failure below.
    | st.tuples(st.integers(0, 2**63), st.integers(0, 2**63)).map(lambda t: f"{t[0]}-{t[1]}".encode())
)


def test_last_event_id_garbage_never_gets_a_5xx(redis_url: str, shared_server: Server) -> None:
    server = shared_server
    path = f"/notifications/{NEWS}/events".encode()
    statuses: dict[int, int] = {}

    @_settings(EXAMPLES)
    @given(value=header_values, where=st.sampled_from(["header", "query", "both"]))
    def check(value: bytes, where: str) -> None:
        target = path
        if where != "header":
            target += b"?last_event_id=" + quote(value, safe="").encode()
        request = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
        if where != "query":
            request += b"Last-Event-ID: " + value + b"\r\n"
        status = _status(server.port, request + b"Connection: close\r\n\r\n")
        statuses[status] = statuses.get(status, 0) + 1
        assert 200 <= status < 500, (status, value[:80])

    check()
    # The server must still serve, and both outcomes must have been seen.
    assert server.status(path.decode()) == 200
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses
    report("Last-Event-ID fuzz", examples=sum(statuses.values()), statuses=statuses)


@pytest.mark.parametrize(
    "value",
    [
        "18446744073709551616-0",
        "0-18446744073709551616",
        "99999999999999999999-0",
        "18446744073709551615-18446744073709551615",
    ],
)
def test_a_last_event_id_past_64_bits_is_a_400(redis_url: str, shared_server: Server, value: str) -> None:
    assert shared_server.status(f"/notifications/{NEWS}/events", last_event_id=value) == 400
