"""Timers through real processes: a ``celery worker`` and ``celery beat``
that import tests/timers/timers_app.py, a real SMTP server (aiosmtpd), and
the ledger and inbox in SQLite or PostgreSQL.

- Digests: 1,000 events to 100 users, a 5 s window; the worker is killed
  with SIGKILL in the middle of a flush, and beat (the only ticker) is
  killed too. Each user's events arrive once each, one mail per window;
  the only repeats are those docs/timers.rst allows: a mail that left the
  killed worker before its fire was recorded, sent again with its
  Message-ID by the restarted one.
- "Unless read": an item read before its deadline sends no mail, an unread
  one sends exactly one.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis
import sqlalchemy as sa

from flask_notifications import Event
from tests.helpers import BeatProcess, WorkerProcess, delete_keys, report, wait_for
from tests.timers.conftest import SmtpServer

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

APP_MODULE = "tests.timers.timers_app"
USERS, PER_USER = 100, 10
#: Users of the digest kill test on PostgreSQL, which CI runs with 200
#: events (the 1,000 on SQLite). 1,000 pass there too (6 runs on 2026-12-06:
#: 41 s to 187 s at load 4 to 13), but not within the minute
#: CI allows a test: each delivery is three PostgreSQL transactions (claim,
#: add, record), each window flush four, and beat's ticks take a pool
#: process; the kill lands while the 1,000 are being dispatched, and the
#: dispatch run again enqueues about 700 duplicates, which their claims skip.
POSTGRES_USERS = int(os.environ.get("DIGEST_POSTGRES_USERS", "20"))
#: The digest window of the kill test: 5 s in CI; DIGEST_WINDOW=60 runs the
#: issue's one-minute digest.
WINDOW = os.environ.get("DIGEST_WINDOW", "5")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'timers.sqlite3'}"
        return
    url = str(request.getfixturevalue("postgres_url"))
    yield url
    engine = sa.create_engine(url)
    prefix = re.sub(r"\W", "_", unique)
    with engine.begin() as conn:
        names = conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE tablename LIKE :p"), {"p": f"{prefix}%"}
        ).scalars()
        for name in list(names):
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture
def timers_env(
    redis_url: str, unique: str, database: str, smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {
        "TIMERS_REDIS_URL": redis_url,
        "TIMERS_PREFIX": unique,
        "TIMERS_DATABASE_URL": database,
        "TIMERS_SMTP_PORT": str(smtp_server.port),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _import(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sys.modules.pop(APP_MODULE, None)
    return importlib.import_module(APP_MODULE)


@pytest.fixture
def cleanup(redis_client: redis.Redis[bytes], unique: str) -> Iterator[list[ModuleType]]:
    modules: list[ModuleType] = []
    yield modules
    for module in modules:
        with module.app.app_context():
            module.notifications.inbox.close()
            module.notifications.get_ledger(module.app).close()
        module.notifications.get_backend(module.app).close()
    sys.modules.pop(APP_MODULE, None)
    delete_keys(redis_client, unique)


def _ids_by_user(smtp_server: SmtpServer, once: bool = False) -> dict[str, list[list[str]]]:
    """Each user's mails, as the event ids each one lists; ``once``: a
    Message-ID's first mail only."""
    found: dict[str, list[list[str]]] = {}
    with smtp_server.lock:
        received = list(smtp_server.received)
    seen: set[str] = set()
    for mail in received:
        message_id = str(mail.message["Message-ID"])
        if once and message_id in seen:
            continue
        seen.add(message_id)
        (rcpt,) = mail.rcpt_tos
        body = mail.message.get_body(("plain",))
        assert body is not None
        found.setdefault(rcpt.split("@")[0], []).append(body.get_content().split())
    return found


def _listed(smtp_server: SmtpServer) -> set[str]:
    return {event_id for mails in _ids_by_user(smtp_server).values() for mail in mails for event_id in mail}


def _repeats_of_the_kill(smtp_server: SmtpServer, earliest: float, killed_at: float, split: float) -> int:
    """Check that every mail sent twice is the duplicate docs/timers.rst
    allows, and return how many there are: a fire of the killed worker sent
    it and was killed before its claim was recorded, so the restarted worker
    sent it again, the same window (the same events) under the same
    Message-ID. So its first copy arrived between ``earliest`` and ``split``
    (just after the kill: the server may read the dead worker's last mail a
    moment after it), the second one after ``split``, and there is no third."""
    with smtp_server.lock:
        received = sorted(smtp_server.received, key=lambda mail: mail.at)
    first: dict[str, tuple[float, list[str], list[str]]] = {}
    repeated: set[str] = set()
    for mail in received:
        message_id = str(mail.message["Message-ID"])
        body = mail.message.get_body(("plain",))
        assert body is not None
        content = (mail.at, mail.rcpt_tos, body.get_content().split())
        if message_id not in first:
            first[message_id] = content
            continue
        at, rcpt_tos, ids = first[message_id]
        context = f"{message_id} to {rcpt_tos}: at {at - killed_at:+.3f} s and {mail.at - killed_at:+.3f} s of the kill"
        assert message_id not in repeated, f"a third copy of {context}"
        assert (mail.rcpt_tos, content[2]) == (rcpt_tos, ids), f"another mail under {context}"
        assert earliest <= at <= split < mail.at, f"a repeat not due to the kill: {context}"
        repeated.add(message_id)
    return len(repeated)


@pytest.mark.reliability
@pytest.mark.timeout(420)
def test_digests_survive_a_killed_worker_and_a_killed_beat(
    timers_env: dict[str, str],
    smtp_server: SmtpServer,
    cleanup: list[ModuleType],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hang = tmp_path / "hang"
    env = {**timers_env, "TIMERS_WINDOW": WINDOW, "TIMERS_BEAT": "1", "TIMERS_HANG": str(hang)}
    module = _import(env, monkeypatch)
    cleanup.append(module)
    # Two pool processes: a tick that flushes does not hold the deliveries back.
    worker = WorkerProcess(APP_MODULE, env, tmp_path / "worker.log", pool="prefork", concurrency=2)
    beat = BeatProcess(APP_MODULE, env, tmp_path / "beat.log", tmp_path / "beat-schedule")
    sent: dict[str, list[str]] = {}
    worker.start()
    beat.start()
    try:
        events = []
        users = POSTGRES_USERS if env["TIMERS_DATABASE_URL"].startswith("postgresql") else USERS
        for number in range(PER_USER):
            for user in range(users):
                event = Event(None, "comment", f"Comment {number}", "", recipients=[f"user{user}"])
                sent.setdefault(f"user{user}", []).append(event["event_id"])
                events.append(event)
        with module.app.app_context():
            module.notifications.send_many(events)
        # The first flush writes the worker's pid and hangs before it mails.
        pid = int(wait_for(lambda: hang.exists() and hang.read_text(), timeout=120))
        assert worker.proc is not None and os.getpgid(pid) == worker.proc.pid  # a process of the worker
        worker.kill()
        killed_at = time.time()
        worker.start()
        wait_for(lambda: len(smtp_server.received) >= 1, timeout=60)
        beat.kill()  # mid-run: no tick until it is back
        beat.start()
        wait_for(lambda: _listed(smtp_server) >= {event["event_id"] for event in events}, timeout=240, interval=0.5)
        with module.app.app_context():
            wait_for(lambda: module.notifications.timers.pending() == 0, timeout=60)
    finally:
        beat.stop()
        worker.stop()
    # A fire of the killed worker that mailed and was killed before it
    # recorded its claim is fired again, and mails again under the same
    # Message-ID (docs/timers.rst, "Failure cases"). The kill lands while the
    # pool's other fires mail (each process fires up to
    # NOTIFICATIONS_TIMER_CONCURRENCY at once), and on SQLite a record waits
    # for the database's lock (20-30 ms typically, 200 ms often, 2 s at
    # worst at load 10): CI saw such a repeat in about 1 run in 8, and a kill
    # 0.3 s after the hang makes one in half the runs. A fire in flight at the
    # kill mailed at most a lease and a ledger call's timeouts before it: a
    # record that failed for longer than that gave up (a defect this still
    # fails on).
    config = module.app.config
    in_flight = 2 * int(config["NOTIFICATIONS_TIMER_CONCURRENCY"])
    window = sum(
        float(config[key])
        for key in (
            "NOTIFICATIONS_TIMER_CLAIM_LEASE",
            "NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT",
            "NOTIFICATIONS_INBOX_POOL_TIMEOUT",
        )
    )
    # The claim of a fire killed in flight had two thirds of
    # NOTIFICATIONS_CLAIM_TIMEOUT left at least (it is extended every third),
    # so its repeat comes later than a third after the kill.
    split = killed_at + float(config["NOTIFICATIONS_CLAIM_TIMEOUT"]) / 3
    repeats = _repeats_of_the_kill(smtp_server, killed_at - window, killed_at, split)
    assert repeats <= in_flight
    mails = _ids_by_user(smtp_server, once=True)  # a repeat checked above lists its events once
    for user, ids in sent.items():
        listed = [event_id for mail in mails[user] for event_id in mail]
        assert sorted(listed) == sorted(ids), user  # every event once
    report(
        "digest kill -9 worker and beat",
        events=len(events),
        users=users,
        mails=len(smtp_server.received),
        repeats_of_the_kill=repeats,
        windows_per_user=max(len(found) for found in mails.values()),
    )


def test_unless_read_mails_only_the_unread(
    timers_env: dict[str, str],
    smtp_server: SmtpServer,
    cleanup: list[ModuleType],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**timers_env, "TIMERS_DELAY": "4", "TIMERS_TICK": "0.5"}
    module = _import(env, monkeypatch)
    cleanup.append(module)
    with module.app.app_context():
        module.notifications.inbox.create_all()
    worker = WorkerProcess(APP_MODULE, env, tmp_path / "worker.log")
    worker.start()
    try:
        with module.app.app_context():
            notifications = module.notifications
            read = notifications.send(Event(None, "reminder", "Read in time", "", recipients=["alice"]))
            unread = Event(None, "reminder", "Left unread", "", recipients=["bob"])
            notifications.send(unread)
            ledger = notifications.get_ledger()
            timer_id = f"delayed:{module.reminders.hub_id}:{_delayed_task(module)}:{read.delivery_id}"
            wait_for(lambda: ledger.timer_get(timer_id), timeout=30)
            (item,) = wait_for(lambda: notifications.inbox.list("alice").items, timeout=30)
            notifications.inbox.mark_read("alice", [item.id])
            # Read before its deadline: its timer has not fired yet.
            assert ledger.timer_get(timer_id) is not None
            wait_for(lambda: notifications.timers.pending() == 0, timeout=30)
    finally:
        worker.stop()
    mails = _ids_by_user(smtp_server)
    assert mails == {"bob": [[unread["event_id"]]]}, worker.output()[-3000:]


def _delayed_task(module: ModuleType) -> str:
    from flask_notifications.consumers import Delayed

    (name,) = [
        name for name in module.reminders.consumer_names if isinstance(module.reminders.get_consumer(name), Delayed)
    ]
    return name
