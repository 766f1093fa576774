"""Rough throughput of the predefined consumers, outside Celery.

    python bench/consumers.py [--lines 20000] [--processes 4] [--emails 300]

- LogConsumer: lines appended per second by one process, then by several
  processes appending to one file at once (and a check that every line is
  whole).
- FlaskEmailConsumer and FlaskMailConsumer: emails per second to a local
  aiosmtpd server, one SMTP connection per email (as in a worker).

Figures depend on the machine and its load; they are for comparison only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_notifications import Notifications  # noqa: E402
from flask_notifications.consumers.flaskemail_consumer import FlaskEmailConsumer  # noqa: E402
from flask_notifications.consumers.flaskmail_consumer import FlaskMailConsumer  # noqa: E402
from flask_notifications.consumers.log_consumer import LogConsumer  # noqa: E402
from flask_notifications.event import Event  # noqa: E402


def _event(i: int, size: int = 200) -> Event:
    return Event(None, "bench", f"event {i} ✓", "ü" * size)


def _append(path: str, count: int) -> None:
    consumer = LogConsumer(path)
    for i in range(count):
        consumer(_event(i, 200 if i % 10 else 6000))


def bench_log(lines: int, processes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "one.log")
        start = time.perf_counter()
        _append(path, lines)
        elapsed = time.perf_counter() - start
        print(f"LogConsumer, 1 process: {lines / elapsed:,.0f} lines/s")

        path = os.path.join(tmp, "many.log")
        per = lines // processes
        workers = [multiprocessing.Process(target=_append, args=(path, per)) for _ in range(processes)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
        with open(path, encoding="utf-8") as f:
            written = [json.loads(line) for line in f]
        assert len(written) == per * processes, len(written)
        print(
            f"LogConsumer, {processes} processes on one file: {per * processes / elapsed:,.0f} lines/s "
            f"({len(written)} whole lines)"
        )


def bench_mail(emails: int) -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Sink.count += 1
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app = Flask("bench")
        app.config.update(
            NOTIFICATIONS_BACKEND="memory",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=port,
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=port,
            MAIL_SUPPRESS_SEND=False,
        )
        Notifications(app)
        for cls in (FlaskEmailConsumer, FlaskMailConsumer):
            consumer = cls.from_app(app, "noreply@example.org", ["ops@example.org"])
            before = Sink.count
            with app.app_context():
                start = time.perf_counter()
                for i in range(emails):
                    consumer(_event(i))
                elapsed = time.perf_counter() - start
            assert Sink.count - before == emails
            print(f"{cls.__name__}: {emails / elapsed:,.0f} emails/s (one connection each)")
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--emails", type=int, default=300)
    args = parser.parse_args()
    bench_log(args.lines, args.processes)
    bench_mail(args.emails)


if __name__ == "__main__":
    main()
