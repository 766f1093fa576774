"""The durable timers under load (issue 24's targets).

``python -m bench.timers [--ledger redis|postgresql|sqlite]`` measures, on
the ledger chosen (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``;
``POSTGRES_URL``, default the suite's ``test`` database; a SQLite file):

1. **Digest flush**: 100,000 pending digest items over 10,000 users (10 each,
   one window per user), all due; one process ticks, as one worker's
   :class:`~flask_notifications.timers.worker.TimerTicker` does, until every
   window is flushed. It prints the time and checks that the inner consumer
   received 10,000 digests listing 100,000 events, each once.
2. **Precision**: 100,000 pending timers (due in an hour), plus 300 probes
   due over the next 15 s; a ticker thread ticks every
   ``NOTIFICATIONS_TIMER_TICK`` (1 s). It prints how late each probe fired
   after its due time: p50, p99 and the maximum (target: the tick plus 1 s).

The setup writes the pending entries straight into the ledger (bulk, for
SQL); what is timed is the tick, the claim, the fire and the inner consumer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_notifications import Event, EventConsumer, Notifications
from flask_notifications.consumers.delayed import Delayed, delayed_timer_id
from flask_notifications.consumers.digest import Digest, digest_group
from flask_notifications.ledger.base import Ledger
from flask_notifications.ledger.redis import RedisLedger
from flask_notifications.ledger.sql import SqlLedger
from flask_notifications.timers.owner import now_ms, record
from flask_notifications.timers.tick import tick

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class Count(EventConsumer):
    """Counts the digests and the events they list; notes when probes fire."""

    def __init__(self) -> None:
        super().__init__()
        self.digests = 0
        self.listed: dict[str, int] = {}
        self.late_ms: list[float] = []
        self.lock = threading.Lock()

    def consume(self, event: Event) -> None:
        with self.lock:
            if event["event_type"] == "digest":
                self.digests += 1
                for item in event["events"]:
                    self.listed[item["event_id"]] = self.listed.get(item["event_id"], 0) + 1
            else:
                self.late_ms.append(time.time() * 1000 - float(event["due_ms"]))


def _app(ledger: str, prefix: str, workdir: str, concurrency: int = 8) -> tuple[Flask, Notifications, Count]:
    app = Flask("bench_timers")
    url = {"redis": REDIS_URL, "postgresql": POSTGRES_URL, "sqlite": f"sqlite:///{workdir}/ledger.sqlite3"}[ledger]
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://",
        NOTIFICATIONS_LEDGER_URL=url,
        NOTIFICATIONS_KEY_PREFIX=prefix,
        NOTIFICATIONS_TIMER_TICK=1.0,
        NOTIFICATIONS_TIMER_CLAIM_LEASE=60,
        NOTIFICATIONS_TIMER_CONCURRENCY=concurrency,
        NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT=None,
    )
    notifications = Notifications(app)
    inner = Count()
    hub = notifications.create_hub("bench")
    hub.register_consumer(Digest(inner, window=3600), celery_task_name="bench.digest")
    hub.register_consumer(Delayed(inner, after=3600), celery_task_name="bench.delayed")
    return app, notifications, inner


def _put_digests(ledger: Ledger, hub_id: str, users: int, per_user: int, due: int) -> list[str]:
    """Open one window per user holding ``per_user`` events; return the event ids."""
    ids: list[str] = []
    rows_t: list[dict[str, Any]] = []
    rows_i: list[dict[str, Any]] = []
    for user in range(users):
        group = digest_group(hub_id, "bench.digest", f"user{user}", "")
        fields = record("digest", hub_id, "bench.digest", r=f"user{user}", k="")
        rows_t.append({"id": group, "record": fields, "version": uuid.uuid4().hex, "due_ms": due, "attempts": 0})
        for number in range(per_user):
            event = Event(None, "comment", f"c{number}", "", recipients=[f"user{user}"])
            ids.append(event["event_id"])
            rows_i.append(
                {"grp": group, "sealed": "", "item_id": event["event_id"], "item": json.dumps(event.to_dict())}
            )
    _write(ledger, rows_t, rows_i)
    return ids


def _write(ledger: Ledger, timers: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Write timers and digest items in bulk, in the layout each ledger
    documents (ledger/redis_timers.py, ledger/sql_timers.py)."""
    if isinstance(ledger, SqlLedger):
        _bulk(ledger, ledger.timers, timers)
        _bulk(ledger, ledger.digest_items, items)
        return
    if not isinstance(ledger, RedisLedger):
        for row in timers:
            ledger.timer_set(row["id"], row["record"], row["due_ms"], row["version"])
        return
    base = f"{ledger.key_prefix}:{{timers}}"
    pipe = ledger.client.pipeline(transaction=False)
    for number, row in enumerate(timers, 1):
        pipe.zadd(f"{base}:due", {row["id"]: row["due_ms"]})
        pipe.hset(f"{base}:rec", row["id"], row["record"])
        pipe.hset(f"{base}:ver", row["id"], row["version"])
        pipe.hset(f"{base}:att", row["id"], 0)
        if number % 2000 == 0:
            pipe.execute()
    for number, row in enumerate(items, 1):
        pipe.hset(f"{base}:open:{row['grp']}", row["item_id"], row["item"])
        pipe.rpush(f"{base}:order:{row['grp']}", row["item_id"])
        if number % 2000 == 0:
            pipe.execute()
    pipe.execute()


def _bulk(ledger: SqlLedger, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    ledger.create_all()
    with ledger.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(table.insert(), rows[start : start + 5000])


def _put_timers(ledger: Ledger, hub_id: str, count: int, due: int, probe: bool = False) -> None:
    rows = []
    for number in range(count):
        delivery = uuid.uuid4().hex
        event = Event(None, "probe", "p", "", due_ms=due + (number * 50 if probe else 0))
        fields = record("delayed", hub_id, "bench.delayed", d=delivery, e=event.to_json())
        timer_id = delayed_timer_id(hub_id, "bench.delayed", delivery)
        if probe:
            ledger.timer_set(timer_id, fields, int(event["due_ms"]), "v")
        else:
            rows.append({"id": timer_id, "record": fields, "version": "v", "due_ms": due, "attempts": 0})
    _write(ledger, rows, [])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _clean(app: Flask, notifications: Notifications, prefix: str) -> None:
    ledger = notifications.get_ledger(app)
    if isinstance(ledger, SqlLedger):
        for table in (ledger.digest_items, ledger.timers, ledger.outbox, ledger.letters, ledger.claims):
            table.drop(ledger.engine, checkfirst=True)
    else:
        client = getattr(ledger, "client", None)
        if client is not None:
            keys = list(client.scan_iter(f"{prefix}*"))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
    ledger.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", choices=["redis", "postgresql", "sqlite"], default="redis")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8, help="NOTIFICATIONS_TIMER_CONCURRENCY")
    parser.add_argument("--flush-only", action="store_true", help="skip the precision run")
    args = parser.parse_args(argv)
    prefix = f"bench_timers_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as workdir:
        app, notifications, inner = _app(args.ledger, prefix, workdir, args.concurrency)
        hub_id = notifications.create_hub("bench").hub_id
        try:
            with app.app_context():
                ledger = notifications.get_ledger()
                started = time.perf_counter()
                ids = _put_digests(ledger, hub_id, args.users, args.per_user, now_ms())
                print(
                    f"setup: {len(ids)} digest items over {args.users} users in {time.perf_counter() - started:.1f} s"
                )
            started = time.perf_counter()
            while tick(app):
                pass
            flushed = time.perf_counter() - started
            once = sorted(set(inner.listed.values())) == [1] and len(inner.listed) == len(ids)
            print(
                f"digest flush: {inner.digests} digests listing {len(inner.listed)} events "
                f"(each once: {once}) in {flushed:.1f} s from one process, {args.concurrency} fires at a time"
            )
            if args.flush_only:
                return 0
            with app.app_context():
                started = time.perf_counter()
                _put_timers(ledger, hub_id, args.pending, now_ms() + 3_600_000)
                print(f"setup: {args.pending} pending timers in {time.perf_counter() - started:.1f} s")
                _put_timers(ledger, hub_id, args.probes, now_ms() + 2000, probe=True)
            stop = threading.Event()

            def ticker() -> None:
                while not stop.wait(float(app.config["NOTIFICATIONS_TIMER_TICK"])):
                    while tick(app) >= 200:
                        pass

            thread = threading.Thread(target=ticker, daemon=True)
            thread.start()
            deadline = time.monotonic() + 120
            while len(inner.late_ms) < args.probes and time.monotonic() < deadline:
                time.sleep(0.2)
            stop.set()
            thread.join()
            late = inner.late_ms
            print(
                f"precision with {args.pending} pending, tick 1 s: {len(late)}/{args.probes} probes fired; late by "
                f"p50 {statistics.median(late):.0f} ms, p99 {_percentile(late, 0.99):.0f} ms, max {max(late):.0f} ms"
            )
        finally:
            _clean(app, notifications, prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
