"""A send interrupted while it awaits its outbox record's reply (a
``gevent.Timeout`` around the request's work, a killed greenlet) gives the
record's connection back to the pool: a lost slot of the backend's bounded
pool is never returned, and once all are lost every call waits out the
pool's timeout and fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.helpers import ROOT, RedisServer, make_config

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, os, signal, sys
import gevent
from flask import Flask
from flask_notifications import Event, Notifications

config, server_pid = json.loads(sys.argv[1]), int(sys.argv[2])
app = Flask("interrupted")
app.config.update(config)
ext = Notifications(app)
hub = ext.create_hub("Interrupted")
hub.register_consumer(celery_task_name="tests.interrupted", pass_event=True)(lambda event: None)
pause = [False]
matches = hub.event_filter


def stall_the_ledger_then_match(event):
    # After the hubs are matched, send() writes the record: the ledger is
    # stopped just before, so the record's reply never comes.
    if pause[0]:
        pause[0] = False
        os.kill(server_pid, signal.SIGSTOP)
    return matches(event)


hub.event_filter = stall_the_ledger_then_match
with app.app_context():
    ext.send(Event(None, "t", "warm-up: the record's script is loaded", ""))
    pool = ext.get_ledger(app).client.connection_pool
    free = pool.pool.qsize()
    for n in range(3):
        pause[0] = True
        try:
            with gevent.Timeout(1.0):
                ext.send(Event(None, "t", f"interrupted {n}", ""))
        except gevent.Timeout:
            pass
        os.kill(server_pid, signal.SIGCONT)
    print(json.dumps({"before": free, "after": pool.pool.qsize()}))
"""


def test_an_interrupted_send_gives_its_connection_back(
    private_redis: Callable[..., RedisServer], redis_url: str, unique: str
) -> None:
    server = private_redis()
    assert server.proc is not None
    # The broker on the shared Redis, the ledger (the backend's) on the private one.
    config = make_config(server.url, unique, CELERY_BROKER_URL=redis_url)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config), str(server.proc.pid)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    server.resume()
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["after"] == counts["before"], counts
