"""The outbox (flask_notifications/worker/outbox.py) on a RabbitMQ
deployment: a ``send()`` that returned is delivered, and its effect happens
once, when the RabbitMQ node (the Celery broker and the backend) is
SIGKILLed while events are sent.

The deployment is the one docs/deployment.rst describes for RabbitMQ:
RabbitMQ carries the Celery tasks and the events (``NOTIFICATIONS_BACKEND =
"amqp"``), and the ledger (claims and outbox) is in the application's
database, here PostgreSQL; no Redis. The node is the test's own
(:class:`~tests.helpers.rabbit_servers.RabbitNode`, on ports of its own),
killed with SIGKILL and started again on the same data: the shared RabbitMQ
is never touched.

Celery publishes without confirms by default, so a ``send()`` returns once
its message is written to the socket; a node killed then has not stored it.
A node takes seconds to boot (7 to 19 s measured on a loaded two-core
machine), so the test kills it ``RABBITMQ_KILLS`` times, 2 by default, not
20: twenty restarts take minutes (about 7 with the drain, measured).
"""

from __future__ import annotations

import importlib
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from kombu import Connection

from flask_notifications.ledger.sql import SqlLedger
from tests.helpers import WorkerProcess, report, wait_for
from tests.helpers.kills import SteadySends, Supervisor, wait_while_progressing
from tests.helpers.rabbit_servers import RabbitNode

pytestmark = [pytest.mark.reliability, pytest.mark.amqp, pytest.mark.postgres, pytest.mark.subprocess]

APP_MODULE = "tests.worker.outbox_app"
#: How many times the test kills the node (each restart takes seconds).
KILLS = int(os.environ.get("RABBITMQ_KILLS", "2"))
#: send() calls per second.
RATE = 200
#: Seconds without progress after which the test stops waiting for the
#: deliveries: longer than the sweeper leaves a lost message's entry alone
#: while messages wait in the queue (16 timeouts of outbox_app's 10 s), and
#: a few sweeps. A fixed 120 s was shorter than that: on a loaded machine
#: the worker was still delivering, and copying, when the test gave up.
STALL = 16 * 10 + 20


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RabbitNode]:
    node = RabbitNode(tmp_path / "rabbit")
    node.start()
    yield node
    node.remove()


@pytest.fixture
def rabbit_env(node: RabbitNode, postgres_url: str, unique: str, tmp_path: Path) -> dict[str, str]:
    return {
        "OUTBOX_AMQP_URL": node.url,
        "OUTBOX_LEDGER_URL": postgres_url,
        "OUTBOX_PREFIX": unique.replace("-", "_"),
        "OUTBOX_DIR": str(tmp_path),
    }


@pytest.fixture
def app_module(rabbit_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for key, value in rabbit_env.items():
        monkeypatch.setenv(key, value)
    sys.modules.pop(APP_MODULE, None)
    module = importlib.import_module(APP_MODULE)
    yield module
    ledger = module.notifications.get_ledger(module.app)
    assert isinstance(ledger, SqlLedger)
    for table in (ledger.outbox, ledger.letters, ledger.claims):
        table.drop(ledger.engine, checkfirst=True)
    ledger.close()
    sys.modules.pop(APP_MODULE, None)


def effects(directory: Path) -> Counter[str]:
    path = directory / "effects"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def queued(url: str, queue: str) -> int | None:
    """Messages ready in ``queue``; ``None`` when the node does not answer."""
    try:
        with Connection(url, connect_timeout=1) as conn:
            _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
            return int(count)
    except Exception:  # any failure to reach the node: not settled
        return None


# Each kill costs a node boot (7 to 20 s) and the sends that follow it; the
# wait for the deliveries ends within STALL of the last progress.
@pytest.mark.timeout(600 + 30 * KILLS)
def test_every_send_that_returned_is_delivered_once_across_rabbitmq_kills(
    node: RabbitNode, rabbit_env: dict[str, str], app_module: ModuleType, tmp_path: Path
) -> None:
    began = time.monotonic()
    worker = WorkerProcess(APP_MODULE, rabbit_env, tmp_path / "worker.log", pool="threads")
    worker.start()
    wait_for(lambda: "ready." in worker.output(), timeout=60)
    boots: list[float] = []
    sender = SteadySends(app_module.app, app_module.notifications, RATE)
    sent = sender.sent
    supervisor = Supervisor(worker)
    sender.start()
    supervisor.start()
    rng = random.Random(22)
    try:
        for _ in range(KILLS):
            before = len(sent)
            wait_for(lambda before=before: len(sent) >= before + rng.randint(50, 200), timeout=60)  # type: ignore[misc]
            node.kill()
            started = time.monotonic()
            node.start()
            boots.append(round(time.monotonic() - started, 1))
        before = len(sent)
        wait_for(lambda: len(sent) >= before + 50, timeout=60)
    finally:
        sender.stop()
    ledger = app_module.notifications.get_ledger(app_module.app)
    queue = rabbit_env["OUTBOX_PREFIX"]
    drained = time.monotonic()
    try:
        # Every send delivered, no outbox entry (every consumer run ended)
        # and no message waiting, so no late repeat can follow. However slow
        # the machine, wait while the worker makes progress (an effect, an
        # outbox entry taken or added, a message taken or queued).
        wait_while_progressing(
            lambda: set(sent) <= set(effects(tmp_path)) and ledger.outbox_size() == 0 and queued(node.url, queue) == 0,
            lambda: (sum(effects(tmp_path).values()), ledger.outbox_size(), queued(node.url, queue)),
            stall=STALL,
        )
    finally:
        drained = time.monotonic() - drained
        supervisor.stop()
        worker.stop()
    found = effects(tmp_path)
    lost = [delivery for delivery in sent if delivery not in found]
    repeated = {delivery: count for delivery, count in found.items() if count > 1}
    report(
        "Outbox: RabbitMQ SIGKILLs",
        kills=KILLS,
        restart_seconds=boots,
        sent=len(sent),
        refused=sender.refused,
        delivered=len(set(sent) & set(found)),
        lost=len(lost),
        repeated=len(repeated),
        worker_restarts=len(supervisor.restarts),
        enqueued_again=worker.output().count("enqueueing it again"),
        wall_seconds=round(time.monotonic() - began, 1),
        drain_seconds=round(drained, 1),
    )
    assert sender.refused, "no send() fell into an outage: the test proved nothing"
    assert not lost, (len(lost), len(sent), worker.output()[-3000:])
    assert not repeated, (repeated, worker.output()[-3000:])
