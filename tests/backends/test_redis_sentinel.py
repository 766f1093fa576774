"""A Sentinel-managed Redis fails over under 100 SSE streams and a steady
publisher: the streams resume on the new master, every event published after
the failover arrives, and the events the old master took with it (acknowledged
to the publisher, never replicated) are announced by a gap, never silently
missing.

The test starts a master, a replica and three sentinels on free ports. To make
asynchronous replication lose writes for sure, the replica and the web server
are stopped (SIGSTOP) and the replication link cut while the master keeps
accepting events, and the master is killed (SIGKILL) before they continue.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.backends.base import Message, parse_id
from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.errors import BackendError, BrokerUnavailableError
from tests.apps.sse_app import create_app
from tests.helpers import SentinelGroup, WorkerFactory, WorkerProcess, make_config, report, wait_for
from tests.helpers.kills import Supervisor
from tests.helpers.redis_servers import MASTER_NAME, RedisServer
from tests.helpers.resuming_client import ResumingClient
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.subprocess]

HUB = "event-hub-news"
STREAMS = 100


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    group = SentinelGroup()
    group.start()
    yield group
    group.stop()


class Publisher(threading.Thread):
    """Publishes an event every few milliseconds, retrying through outages,
    and keeps the id of every one the server acknowledged."""

    def __init__(self, backend: RedisPubSub) -> None:
        super().__init__(daemon=True)
        self.backend = backend
        self.acked: dict[int, str] = {}
        self.refused = 0
        self.seq = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            event = Event(None, "t", f"event {self.seq}", "body", seq=self.seq)
            try:
                message = self.backend.publish(HUB, event.to_json())
            except BackendError:
                # Not acknowledged: the failover is under way. A new event
                # (the next seq) follows once the new master answers.
                self.refused += 1
                self.halt.wait(0.05)
            else:
                self.acked[self.seq] = message.id
            self.seq += 1
            self.halt.wait(0.005)

    def acked_since(self, seq: int) -> list[int]:
        return [s for s in list(self.acked) if s >= seq]


def seqs(client: ResumingClient) -> list[int]:
    return [json.loads(e.data)["seq"] for e in client.events if e.type == "t"]


@pytest.mark.timeout(300)
def test_a_failover_resumes_every_stream_and_announces_what_replication_lost(group: SentinelGroup, unique: str) -> None:
    config = make_config(
        group.url,
        unique,
        NOTIFICATIONS_SSE_RETRY=200,
        NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None,
        NOTIFICATIONS_RECONNECT_BACKOFF_MAX=0.5,
        CELERY_BROKER_URL=group.celery_broker_url,
        CELERY_BROKER_TRANSPORT_OPTIONS={"master_name": MASTER_NAME},
    )
    backend = RedisPubSub(url=group.url, key_prefix=unique, reconnect_backoff_max=0.5)
    server = Server("gevent", config)
    clients = [ResumingClient(f"{server.base}/notifications/{HUB}/events") for _ in range(STREAMS)]
    publisher = Publisher(backend)
    try:
        for client in clients:
            client.start()
        wait_for(lambda: all(c.connections for c in clients), timeout=120)
        publisher.start()
        wait_for(lambda: all(len(seqs(c)) >= 20 for c in clients), timeout=120)

        # The replica and the web server stop; the master alone acknowledges.
        assert server.proc is not None and group.replica.proc is not None
        os.kill(group.replica.proc.pid, signal.SIGSTOP)
        os.kill(server.proc.pid, signal.SIGSTOP)
        # Cut the replication link too, or the writes would wait in the
        # stopped replica's socket buffer and survive.
        old_master = redis.Redis.from_url(group.master.url)
        old_master.client_kill_filter(_type="replica")
        old_master.close()
        window_start = publisher.seq
        time.sleep(0.3)
        group.master.kill()
        window_end = publisher.seq
        os.kill(group.replica.proc.pid, signal.SIGCONT)
        os.kill(server.proc.pid, signal.SIGCONT)

        group.wait_for_failover()
        # Ids are vouched for from the moment a reader noticed the failover
        # (and told every stream); until then a replay conservatively reports
        # a gap, since nothing can tell when the replica was promoted.
        wait_for(lambda: all(any(e.type == "gap" for e in c.events) for c in clients), timeout=120)
        after_failover = publisher.seq
        wait_for(lambda: len(publisher.acked_since(after_failover)) >= 200, timeout=120)
        publisher.halt.set()
        publisher.join(timeout=10)
        published_after = publisher.acked_since(after_failover)
        wait_for(lambda: all(set(published_after) <= set(seqs(c)) for c in clients), timeout=120)
    finally:
        publisher.halt.set()
        for client in clients:
            client.stop()
        server.kill()

    new_master = redis.Redis.from_url(group.replica.url)
    try:
        kept = {entry_id.decode() for entry_id, _ in new_master.xrange(f"{unique}:hub:{HUB}")}
    finally:
        new_master.close()
    in_window = [s for s in range(window_start, window_end) if s in publisher.acked]
    lost_by_replication = [s for s in in_window if publisher.acked[s] not in kept]
    assert lost_by_replication, "replication lost nothing: the test proved nothing"

    for client in clients:
        received = seqs(client)
        assert received == sorted(set(received)), "an event arrived twice or out of order"
        assert set(published_after) <= set(received)
        missing = sorted(set(publisher.acked) - set(received) - set(range(min(received))))
        for seq in missing:
            # Before anything newer than it arrives, the stream says that
            # events after an older id than it may be lost.
            after = min(i for i, e in enumerate(client.events) if e.type == "t" and json.loads(e.data)["seq"] > seq)
            assert any(
                e.type == "gap" and parse_id(json.loads(e.data)["last_event_id"]) < parse_id(publisher.acked[seq])
                for e in client.events[:after]
            ), (seq, client.events[:after][-5:])
        assert set(lost_by_replication) <= set(missing)

    # A browser that comes back later with an id from before the failover is
    # told so too: the history cannot vouch for what followed it.
    before_failover = publisher.acked[window_start - 1]
    assert backend.history(HUB, before_failover).gap
    assert backend.history(HUB, before_failover).reason == "failover"
    assert not backend.history(HUB, publisher.acked[published_after[-1]]).gap
    backend.close()
    report(
        "Sentinel failover",
        streams=STREAMS,
        acknowledged=len(publisher.acked),
        lost_by_replication=len(lost_by_replication),
        refused_during_failover=publisher.refused,
        published_after_failover=len(published_after),
        gaps_per_stream=sorted({sum(1 for e in c.events if e.type == "gap") for c in clients}),
    )


@pytest.fixture
def app(group: SentinelGroup, unique: str) -> Iterator[Flask]:
    """Backend and Celery broker both on the Sentinel-managed master."""
    app = Flask("sentinel_app")
    app.config.update(
        make_config(
            group.url,
            unique,
            CELERY_BROKER_URL=group.celery_broker_url,
            CELERY_BROKER_TRANSPORT_OPTIONS={"master_name": MASTER_NAME},
        )
    )
    yield app


def test_celery_reaches_the_broker_and_the_backend_through_the_sentinels(
    group: SentinelGroup, notifications: Notifications, celery_worker: WorkerFactory, unique: str
) -> None:
    hub = notifications.create_hub("Sentinel")
    effects: list[str] = []
    hub.register_consumer(celery_task_name="sentinel.effect", pass_event=True)(
        lambda event: effects.append(event["event_id"])
    )
    events = [Event(None, "t", f"event {n}", "body") for n in range(5)]
    with celery_worker():
        for event in events:
            notifications.send(event)
        wait_for(lambda: len(effects) >= len(events), timeout=60)
    assert sorted(effects) == sorted(event["event_id"] for event in events)
    # The consumers' claims live on the master the sentinels name.
    master = redis.Redis.from_url(group.master.url)
    try:
        assert list(master.scan_iter(f"{unique}:claim:*"))
    finally:
        master.close()


def test_a_publish_repeated_after_a_failover_is_not_published_again(group: SentinelGroup, unique: str) -> None:
    # A task that the old master handed out comes back from the new one, and
    # its claim may be gone; its dedupe key replicated with the entry.
    backend = RedisPubSub(url=group.url, key_prefix=unique, reconnect_backoff_max=0.5)
    try:
        first = backend.publish(HUB, "event 1", dedupe_key="delivery-1:push")
        old_master = redis.Redis.from_url(group.master.url)
        assert old_master.wait(1, 5000) == 1  # the replica has the entry and its key
        old_master.close()
        group.master.kill()
        group.wait_for_failover()

        def published_again() -> Message | None:
            try:
                return backend.publish(HUB, "event 1", dedupe_key="delivery-1:push")
            except BackendError:
                return None  # the client still looks for the new master

        again = wait_for(published_again, timeout=60)
        backend.publish(HUB, "event 2", dedupe_key="delivery-2:push")
        assert again.id == first.id
        assert [m.data for m in backend.history(HUB, None).messages] == ["event 1", "event 2"]
    finally:
        backend.close()


#: Failovers of the test with a worker backlog at each.
FAILOVERS = int(os.environ.get("SENTINEL_FAILOVERS", "10"))


def _queued(url: str, queue: str) -> int | None:
    """Messages waiting in ``queue`` and handed out unacknowledged, on the
    server at ``url``; ``None`` when it does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        return int(client.llen(queue)) + int(client.zcard(f"{queue}:unacked_index"))
    except redis.exceptions.RedisError:
        return None
    finally:
        client.close()


def _replication(url: str) -> dict[str, object]:
    """The server's replication info; empty when it does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        return dict(client.info("replication"))
    except redis.exceptions.RedisError:
        return {}
    finally:
        client.close()


def _steady(group: SentinelGroup, one: RedisServer, other: RedisServer) -> tuple[RedisServer, RedisServer] | None:
    """``(master, replica)`` once every sentinel announces one of the two
    servers, that one is a master and the other its replica with its link
    up; else ``None``."""
    announced = group.master_addresses()
    if len(set(announced)) != 1 or None in announced:
        return None
    by_port = {one.port: one, other.port: other}
    master = by_port.get(announced[0][1]) if announced[0] else None
    if master is None:
        return None
    replica = other if master is one else one
    master_info, replica_info = _replication(master.url), _replication(replica.url)
    if master_info.get("role") != "master" or replica_info.get("master_port") != master.port:
        return None
    return (master, replica) if replica_info.get("master_link_status") == "up" else None


@pytest.mark.timeout(600)
def test_failovers_with_a_worker_backlog_repeat_nothing_and_announce_every_loss(
    group: SentinelGroup, unique: str, tmp_path: Path
) -> None:
    # The broker, the backend and the ledger on the Sentinel-managed master,
    # as a site with one Redis deployment has them; a real worker (one
    # thread, three PushConsumer tasks per event) that cannot keep up with
    # the bursts sent before each failover, so the master dies with messages
    # queued and handed out.
    config = make_config(
        group.url,
        unique,
        NOTIFICATIONS_SSE_RETRY=200,
        NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None,
        NOTIFICATIONS_RECONNECT_BACKOFF_MAX=0.5,
        NOTIFICATIONS_CLAIM_TIMEOUT=5,
        NOTIFICATIONS_OUTBOX_TIMEOUT=10,
        NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL=0.5,
        NOTIFICATIONS_PUBLISH_RETRY_POLICY={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
        CELERY_BROKER_URL=group.celery_broker_url,
        CELERY_BROKER_TRANSPORT_OPTIONS={
            "master_name": MASTER_NAME,
            "visibility_timeout": 3,
            "unacked_key": f"{unique}:unacked",
            "unacked_index_key": f"{unique}:unacked_index",
            "unacked_mutex_key": f"{unique}:unacked_mutex",
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 1,
            "socket_timeout": 5,
        },
        CELERY_BROKER_CONNECTION_MAX_RETRIES=None,
        CELERY_WORKER_PREFETCH_MULTIPLIER=1,
    )
    # The kombu transport names its unacked index after these options; the
    # queue is the test's own.
    env = {"SSE_APP_CONFIG": json.dumps(config)}
    worker = WorkerProcess("tests.apps.worker_app", env, tmp_path / "worker.log", pool="threads")
    server = Server("gevent", config)
    clients = [ResumingClient(f"{server.base}/notifications/{HUB}/events") for _ in range(10)]
    app = create_app(config)
    notifications = app.extensions["notifications"]
    sent: dict[int, str] = {}
    refused: list[int] = []
    backlogs: list[int] = []
    seq = 0

    def send(count: int) -> None:
        nonlocal seq
        with app.app_context():
            for _ in range(count):
                event = Event(None, "t", f"event {seq}", "body", seq=seq)
                try:
                    notifications.send(event)
                except (BrokerUnavailableError, BackendError):
                    refused.append(seq)
                else:
                    sent[seq] = event["event_id"]
                seq += 1

    master, replica = group.master, group.replica
    # kombu may end a worker that loses its broker mid-restore.
    supervisor = Supervisor(worker)
    try:
        worker.start()
        wait_for(lambda: "ready." in worker.output(), timeout=60)
        supervisor.start()
        for client in clients:
            client.start()
        wait_for(lambda: all(c.connections for c in clients), timeout=120)
        for failover in range(FAILOVERS):
            try:
                send(40)
                backlog = _queued(master.url, unique) or 0
                backlogs.append(backlog)
                if len(backlogs) % 2 == 0:
                    # Every other time, replication loses writes for sure: the
                    # replica stops and its link is cut while the worker goes on
                    # with its backlog on the master (publishes, claims, acks),
                    # which then dies with them.
                    assert replica.proc is not None
                    os.kill(replica.proc.pid, signal.SIGSTOP)
                    old_master = redis.Redis.from_url(master.url)
                    old_master.client_kill_filter(_type="replica")
                    old_master.close()
                    time.sleep(0.5)
                    master.kill()
                    os.kill(replica.proc.pid, signal.SIGCONT)
                master.kill()
                promoted = ("127.0.0.1", replica.port)
                wait_for(lambda promoted=promoted: group.master_address() == promoted, timeout=120, interval=0.1)  # type: ignore[misc]
                # The old master comes back empty (a replica's last full
                # synchronisation left an RDB file in its directory) as the
                # new one's replica.
                master.start_as_replica_of(replica, empty=True)
                # Sentinel may fail over again (it did, under load, within a
                # second of a promotion: its pings to the new master went
                # unanswered for down-after-milliseconds), so the roles are
                # taken from the sentinels once the group is steady: the
                # announced master is one, the other its replica in sync.
                master, replica = wait_for(partial(_steady, group, master, replica), timeout=90, interval=0.1)
            except AssertionError as exc:
                # Which wait of which failover, and what the servers and
                # sentinels said: the test's logs go with its directory.
                raise AssertionError(f"failover {failover + 1}: {exc}\n{group.describe()}") from exc
        send(20)
        # Everything the worker was handed is done: nothing queued, handed
        # out or in the outbox.
        outbox = f"{unique}:{{outbox}}"

        def settled(url: str = master.url) -> bool:
            client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
            try:
                return _queued(url, unique) == 0 and not client.hlen(outbox)
            finally:
                client.close()

        wait_for(settled, timeout=180)
        last = max(sent)
        wait_for(lambda: all(last in seqs(c) for c in clients), timeout=120)
    finally:
        supervisor.stop()
        worker.stop()
        for client in clients:
            client.stop()
        server.kill()

    duplicates = [s for c in clients for s, n in Counter(seqs(c)).items() if n > 1]
    reasons = Counter(json.loads(e.data)["reason"] for c in clients for e in c.events if e.type == "gap")
    unannounced = []
    missing_total = 0
    for client in clients:
        received = set(seqs(client))
        missing = sorted(set(sent) - received)
        missing_total += len(missing)
        gaps = [i for i, e in enumerate(client.events) if e.type == "gap"]
        for s in missing:
            # A loss is announced by a failover gap before the first event
            # sent after it that arrived.
            later = [i for i, e in enumerate(client.events) if e.type == "t" and json.loads(e.data)["seq"] > s]
            if not any(i < later[0] for i in gaps) if later else not gaps:
                unannounced.append(s)
    report(
        "Sentinel failovers with a worker backlog",
        failovers=FAILOVERS,
        streams=len(clients),
        sent=len(sent),
        refused=len(refused),
        backlogs=backlogs,
        missing_per_stream=missing_total / len(clients),
        duplicates=len(duplicates),
        gap_reasons=dict(reasons),
        worker_restarts=len(supervisor.restarts),
        reconnections=sum(c.connections - 1 for c in clients),
        enqueued_again=worker.output().count("enqueueing it again"),
    )
    assert min(backlogs) > 0, backlogs
    assert not duplicates, duplicates[:20]
    assert set(reasons) <= {"failover"}, reasons
    assert not unannounced, unannounced[:20]
