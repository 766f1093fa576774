"""What the preference check adds to one delivery.

Issue 24's target: "the preference check adds <= 1 ms p99 per delivery".
``python -m bench.preferences [-n 20000] [--users 1000] [--recipients 1]``
times exactly what a consumer task runs before its consumer
(``notifications.preferences.narrow(event, hub, channel)``, with the config
look-up), on SQLite (a file) and, when ``INBOX_POSTGRES_URL`` (default: the
local ``test`` database) answers, PostgreSQL. A tenth of the users have a
choice stored. Each database is measured three times:

- ``whole``: the defaults (``NOTIFICATIONS_PREFERENCES_MAX_AGE`` 5 s, the
  table small enough to be copied whole): one query per 5 s reads every
  choice, every other delivery is a look-up;
- ``users``: ``NOTIFICATIONS_PREFERENCES_SNAPSHOT_ROWS = 0``, as for a table
  too large to copy: the deliveries go round the users, so each user's
  choices are read at most once per 5 s, as in a worker that delivers to the
  same users all day (with ``--users`` much larger than what a worker
  delivers in 5 s, this turns into the cold case);
- ``cold``: ``NOTIFICATIONS_PREFERENCES_MAX_AGE = 0``, so every delivery
  reads the database: the worst case, and the cost of a user not seen lately.

It prints p50, p99 and the maximum in milliseconds per delivery (wall
time), and p50 and p99 of the CPU time the check took. On a machine shared
with other work the wall time's p99 is mostly the scheduler: a check of
30 µs that the process is preempted in waits for a time slice.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.consumers.consumer import EventConsumer

POSTGRES_URL = os.environ.get("INBOX_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class _Sms(EventConsumer):
    channel = "sms"

    def consume(self, event: Event) -> None:
        return None


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(
    url: str, deliveries: int, users: int, recipients: int, max_age: float, snapshot: int
) -> tuple[list[float], list[float]]:
    """The cost in milliseconds of each of ``deliveries`` checks: the wall
    time, and the CPU time of this thread (which a machine busy with other
    work does not inflate, but which leaves out the wait for the database)."""
    app = Flask("bench_preferences")
    unique = uuid.uuid4().hex[:8]
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://",
        NOTIFICATIONS_INBOX_URL=url,
        NOTIFICATIONS_PREFERENCES=True,
        NOTIFICATIONS_PREFERENCES_TABLE=f"bench_prefs_{unique}",
        NOTIFICATIONS_PREFERENCES_MAX_AGE=max_age,
        NOTIFICATIONS_PREFERENCES_SNAPSHOT_ROWS=snapshot,
    )
    notifications = Notifications(app)
    hub = notifications.create_hub("news")
    hub.register_consumer(_Sms())
    costs: list[float] = []
    cpu: list[float] = []
    ks = range(recipients)
    with app.app_context():
        preferences = notifications.preferences
        preferences.create_all()
        try:
            for n in range(0, users, 10):
                preferences.set(f"user-{n}", hub, "sms", False)
            events = [
                Event(None, "post", "t", "", recipients=[f"user-{(i * recipients + k) % users}" for k in ks])
                for i in range(deliveries)
            ]
            # A worker holds one event at a time; the 20,000 built here in
            # advance would otherwise make every collection of the cyclic
            # garbage collector scan them, a cost of the benchmark alone.
            gc.collect()
            gc.freeze()
            config = app.config
            for event in events:
                start, start_cpu = time.perf_counter(), time.thread_time()
                # What tasks.py runs for a consumer that names a channel.
                if event["recipients"] and config["NOTIFICATIONS_PREFERENCES"]:
                    preferences.narrow(event, hub, _Sms.channel or "")
                costs.append((time.perf_counter() - start) * 1000)
                cpu.append((time.thread_time() - start_cpu) * 1000)
        finally:
            gc.unfreeze()
            preferences.drop_all()
            notifications.inbox.close()
    return costs, cpu


def _answers(url: str) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--deliveries", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--recipients", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        databases = {"sqlite": f"sqlite:///{Path(tmp) / 'prefs.sqlite3'}"}
        if _answers(POSTGRES_URL):
            databases["postgresql"] = POSTGRES_URL
        print(f"{args.deliveries} deliveries, {args.recipients} recipient(s) each, {args.users} users; ms per delivery")
        print(f"{'database':<12}{'mode':<8}{'p50':>8}{'p99':>8}{'max':>9}{'cpu p50':>9}{'cpu p99':>9}")
        for name, url in databases.items():
            for mode, max_age, snapshot in (("whole", 5.0, 50_000), ("users", 5.0, 0), ("cold", 0.0, 0)):
                costs, cpu = run(url, args.deliveries, args.users, args.recipients, max_age, snapshot)
                p50, p99 = statistics.median(costs), _percentile(costs, 0.99)
                c50, c99 = statistics.median(cpu), _percentile(cpu, 0.99)
                print(f"{name:<12}{mode:<8}{p50:8.3f}{p99:8.3f}{max(costs):9.3f}{c50:9.3f}{c99:9.3f}")


if __name__ == "__main__":
    main()
