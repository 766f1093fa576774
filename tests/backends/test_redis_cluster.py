"""Hubs spread over a Redis Cluster of three masters started by the test
(``cluster-enabled yes``, joined by ``redis-cli --cluster create``): a
subscription holds one connection per node however many hubs it reads, and
live delivery, replay, gaps, claims and dead letters work across slots."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from redis.cluster import RedisCluster

from flask_notifications import Event, Notifications
from flask_notifications.backends.base import Claim, Message
from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.backends.stream_ends import StreamEnds
from tests.helpers import LocalCluster, WorkerFactory, make_config, wait_for
from tests.helpers.sse_client import SSEClient
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def backend(cluster: LocalCluster, unique: str) -> Iterator[RedisPubSub]:
    backend = RedisPubSub(url=cluster.url, key_prefix=unique, history_size=5)
    yield backend
    backend.close()


def pubsub_connections(cluster: LocalCluster) -> list[int]:
    """Connections in pub/sub mode on each node."""
    counts = []
    for node in cluster.nodes:
        client = redis.Redis.from_url(node.url)
        try:
            counts.append(len(client.client_list(_type="pubsub")))
        finally:
            client.close()
    return counts


def nodes_of(backend: RedisPubSub, hubs: list[str]) -> set[str]:
    client: RedisCluster[bytes] = backend.client
    return {client.get_node_from_key(f"{backend.key_prefix}:hub:{hub}").name for hub in hubs}


def read_until(subscription: Any, count: int) -> list[Message]:
    got: list[Message] = []

    def more() -> bool:
        got.extend(subscription.get(0.5))
        return len(got) >= count

    wait_for(more, timeout=60)
    return got


def test_one_subscription_reads_hubs_on_every_node_with_one_connection_per_node(
    cluster: LocalCluster, backend: RedisPubSub
) -> None:
    hubs = [f"hub-{n}" for n in range(60)]
    assert len(nodes_of(backend, hubs)) == 3
    before = pubsub_connections(cluster)
    subscription = backend.subscribe()
    try:
        for hub in hubs:
            subscription.add(hub)
        published = [backend.publish(hub, f"event of {hub}") for hub in hubs]
        got = read_until(subscription, len(hubs))
        assert sorted(got, key=lambda m: m.channel) == sorted(published, key=lambda m: m.channel)
        assert [after - was for after, was in zip(pubsub_connections(cluster), before, strict=True)] == [1, 1, 1]
        # More events on the same hubs take no more connections.
        published = [backend.publish(hub, "again") for hub in hubs for _ in range(3)]
        got = read_until(subscription, len(published))
        assert sorted(m.id + m.channel for m in got) == sorted(m.id + m.channel for m in published)
        assert subscription.lost() == []
        assert [after - was for after, was in zip(pubsub_connections(cluster), before, strict=True)] == [1, 1, 1]
    finally:
        subscription.close()
    assert pubsub_connections(cluster) == before


def test_a_reader_that_falls_behind_the_history_of_a_hub_on_any_node_is_told(backend: RedisPubSub) -> None:
    hubs = [f"behind-{n}" for n in range(12)]
    assert len(nodes_of(backend, hubs)) == 3
    subscription = backend.subscribe()
    try:
        for hub in hubs:
            subscription.add(hub)
        # Far more than history_size (5) between two reads: trimmed past the reader.
        for hub in hubs:
            for n in range(400):
                backend.publish(hub, str(n))
        subscription.get(1)
        assert {lost.channel for lost in subscription.lost()} == set(hubs)
        assert {lost.reason for lost in subscription.lost()} == {"overrun"}
    finally:
        subscription.close()


def test_replay_and_gaps_across_slots(backend: RedisPubSub) -> None:
    hubs = [f"replay-{n}" for n in range(9)]
    assert len(nodes_of(backend, hubs)) == 3
    for hub in hubs:
        ids = [backend.publish(hub, str(n)).id for n in range(3)]
        history = backend.history(hub, ids[0])
        assert [m.data for m in history.messages] == ["1", "2"] and not history.gap
        for n in range(3, 400):
            backend.publish(hub, str(n))
        trimmed = backend.history(hub, ids[0])
        assert trimmed.gap and trimmed.messages[-1].data == "399"
        assert backend.last_id(hub) == trimmed.messages[-1].id


def test_claims_and_dead_letters_across_slots(backend: RedisPubSub) -> None:
    client: RedisCluster[bytes] = backend.client
    ledger = backend.own_ledger({})

    def node(key: str) -> str:
        return str(client.get_node_from_key(f"{backend.key_prefix}:claim:{key}").name)

    # Four keys on each of the three nodes: which node a key's slot is on
    # depends on the test's random prefix (any 12 keys miss a node in about
    # 2 % of runs, as one did).
    by_node: dict[str, list[str]] = {}
    for key in (f"delivery-{n}:hub:consumer" for n in range(1000)):
        if len(by_node.setdefault(node(key), [])) < 4:
            by_node[node(key)].append(key)
        if len(by_node) == 3 and all(len(found) == 4 for found in by_node.values()):
            break
    assert len(by_node) == 3
    # Interleaved, so that the completed half and the released half each
    # span every node.
    keys = [key for group in zip(*by_node.values(), strict=True) for key in group]
    for key in keys:
        assert ledger.claim(key, "owner", 30) is Claim.ACQUIRED
        assert ledger.claim(key, "other", 30) is Claim.BUSY
        assert ledger.extend(key, "owner", 30) and not ledger.extend(key, "other", 30)
    for key in keys[:6]:
        assert not ledger.complete(key, "other", 60)
        assert ledger.complete(key, "owner", 60)
        assert ledger.claim(key, "other", 30) is Claim.DONE
    for key in keys[6:]:
        assert not ledger.release(key, "other")
        assert ledger.release(key, "owner")
        assert ledger.claim(key, "other", 30) is Claim.ACQUIRED
    letter = ledger.add_dead_letter({"hub_id": "h", "consumer": "c", "event": "{}"})
    assert [entry["id"] for entry in ledger.dead_letters()] == [letter]
    # The retry mark and the letter are written by one script on one slot.
    assert ledger.mark_dead_letter(letter, "", "retrying:t1") == "retrying:t1"
    assert ledger.mark_dead_letter(letter, "", "retrying:t2") == "retrying:t1"
    assert ledger.get_dead_letter(letter)["retry"] == "retrying:t1"  # type: ignore[index]
    assert ledger.remove_dead_letter(letter) is not None and ledger.dead_letters() == []


@pytest.fixture
def app(cluster: LocalCluster, redis_url: str, redis_keys: str) -> Flask:
    """The app's backend is the cluster; Celery's broker is the shared Redis."""
    app = Flask("cluster_app")
    app.config.update(make_config(redis_url, redis_keys, NOTIFICATIONS_REDIS_URL=cluster.url))
    return app


def test_a_worker_delivers_through_claims_on_every_node_once(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    hubs = [notifications.create_hub(f"cluster-{n}") for n in range(6)]
    assert len(nodes_of(notifications.backend, [hub.hub_id for hub in hubs])) == 3  # type: ignore[arg-type]
    effects: list[tuple[str, str]] = []
    for hub in hubs:
        hub.register_consumer(celery_task_name=f"cluster.{hub.hub_id}", pass_event=True)(
            lambda event, hub_id=hub.hub_id: effects.append((hub_id, event["event_id"]))
        )
    events = [Event(None, "t", f"event {n}", "body") for n in range(12)]
    with celery_worker():
        for event in events:
            notifications.send(event)
        wait_for(lambda: len(effects) >= len(hubs) * len(events), timeout=120)
    assert sorted(effects) == sorted((hub.hub_id, event["event_id"]) for hub in hubs for event in events)


def test_sse_streams_of_a_process_share_its_node_connection(cluster: LocalCluster, unique: str) -> None:
    config = make_config(
        cluster.url, unique, NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None, NOTIFICATIONS_SSE_RETRY=200
    )
    config["CELERY_BROKER_URL"] = "memory://"
    before = pubsub_connections(cluster)
    server = Server("gevent", config)
    backend = RedisPubSub(url=cluster.url, key_prefix=unique)
    clients = []
    try:
        clients = [SSEClient(f"{server.base}/notifications/event-hub-news/events", timeout=30) for _ in range(20)]
        for client in clients:
            client.wait_open()
        message = backend.publish("event-hub-news", Event(None, "t", "title", "body", seq=1).to_json())
        for client in clients:
            event = client.next_event(timeout=30)
            while event.type != "t":
                event = client.next_event(timeout=30)
            assert event.last_event_id == message.id
        # One node holds the hub; its one connection serves all 20 streams.
        assert sum(pubsub_connections(cluster)) - sum(before) == 1
    finally:
        for client in clients:
            client.close()
        server.kill()
        backend.close()


def test_concurrent_stream_ends_on_a_cluster_answer_each_caller(backend: RedisPubSub) -> None:
    """Lookups queued together go in one cluster pipeline, which sends each
    node its keys' commands: each caller still gets its own stream's end."""
    hubs = [f"h{n}" for n in range(300)]
    for n, hub in enumerate(hubs[::2]):
        backend.publish_many(hub, [f"e{e}" for e in range(1 + n % 3)])
    ends = StreamEnds(backend.client)
    results: dict[str, object] = {}
    start = threading.Barrier(len(hubs))

    def find(hub: str) -> None:
        start.wait()
        results[hub] = ends.find(backend.stream_key(hub))

    threads = [threading.Thread(target=find, args=(hub,), daemon=True) for hub in hubs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {hub: backend.stream_end(hub) for hub in hubs}
    assert len(nodes_of(backend, hubs)) == 3
    assert {added for _, added in results.values()} == {0, 1, 2, 3}  # type: ignore[misc]
