"""The log consumers: JSON lines that stay whole with several worker
processes appending at once, a logger form, one line per event however
often the task runs, and a clear, retried, dead-lettered failure."""

from __future__ import annotations

import fcntl
import importlib
import logging
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Notifications, signals
from flask_notifications.consumers.log_consumer import LogConsumer, LoggingConsumer
from flask_notifications.errors import ConsumerError, LogWriteError
from flask_notifications.event import Event
from tests.helpers import WorkerFactory, delete_keys, deliver_twice, wait_for

ROOT = Path(__file__).resolve().parents[2]
PIPE_BUF = getattr(select, "PIPE_BUF", 4096)


def make_event(title: str = "Title", body: str = "Body", **fields: Any) -> Event:
    return Event(None, "test", title, body, sender="system", **fields)


def read_events(path: Path) -> list[Event]:
    return [Event.from_json(line) for line in path.read_text("utf-8").splitlines()]


def test_one_json_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    consumer = LogConsumer(path)
    events = [
        make_event(title="Grüße ✓", body="line one\nline two\r\n\u2028 \u2029 \x85 \x0b tab\there", priority="high"),
        make_event(body="x" * (4 * PIPE_BUF)),
    ]
    for event in events:
        assert consumer(event) is True
    data = path.read_bytes()
    assert data.count(b"\n") == 2 and data.endswith(b"\n")
    assert "Grüße ✓".encode() in data  # UTF-8, not \u escapes
    assert data.decode().count("\n") == len(data.decode().splitlines()) == 2
    assert read_events(path) == events
    assert oct(path.stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_threads_appending_at_once_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    consumer = LogConsumer(str(path))
    # Lines longer than PIPE_BUF, so a torn or interleaved write would show.
    events = [[make_event(title=f"{t}-{i}", body=str(t) * (PIPE_BUF + 100 * i)) for i in range(25)] for t in range(8)]
    barrier = threading.Barrier(len(events))

    def write(batch: list[Event]) -> None:
        barrier.wait()
        for event in batch:
            consumer(event)

    threads = [threading.Thread(target=write, args=(batch,)) for batch in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = read_events(path)
    assert len(written) == 200
    assert sorted(e["event_id"] for e in written) == sorted(e["event_id"] for b in events for e in b)
    for event in written:
        assert set(event["body"]) == {event["title"].split("-")[0]}


def test_unwritable_log_raises_a_specific_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-directory" / "events.log"
    with pytest.raises(LogWriteError, match="Cannot open the event log .*no-such-directory.*No such file") as info:
        LogConsumer(missing)(make_event())
    assert info.value.path == str(missing)
    with pytest.raises(LogWriteError, match="Is a directory"):
        LogConsumer(tmp_path)(make_event())


@pytest.mark.redis
def test_unwritable_log_is_retried_then_dead_lettered(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory, tmp_path: Path
) -> None:
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 2
    hub = notifications.create_hub("BadLog")
    path = tmp_path / "missing" / "events.log"
    hub.register_consumer(LogConsumer(path))
    errors: list[BaseException] = []

    def on_failed(sender: Flask, exception: BaseException, **kwargs: Any) -> None:
        errors.append(exception)

    signals.consumer_failed.connect(on_failed)
    try:
        with celery_worker():
            event = make_event()
            notifications.send(event)
            (letter,) = wait_for(notifications.dead_letters)
    finally:
        signals.consumer_failed.disconnect(on_failed)
    assert len(errors) == 3 and all(isinstance(e, LogWriteError) for e in errors)
    assert letter["attempts"] == 3 and "LogWriteError" in letter["error"] and str(path) in letter["error"]

    # Once the directory exists, retrying the dead letter writes the line.
    path.parent.mkdir()
    with celery_worker():
        notifications.retry_dead_letter(letter["id"])
        wait_for(path.exists)
    assert read_events(path) == [event]


@pytest.mark.redis
def test_task_run_twice_writes_one_line(
    notifications: Notifications, celery_worker: WorkerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "events.log"
    hub = notifications.create_hub("OnceLog")
    hub.register_consumer(LogConsumer(path))
    event = make_event()
    assert deliver_twice(notifications, celery_worker, hub, event) == ["consumed", "duplicate"]
    assert read_events(path) == [event]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def events_logger(unique: str) -> Iterator[tuple[str, ListHandler]]:
    name = f"tests.{unique}.events"
    handler = ListHandler()
    log = logging.getLogger(name)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield name, handler
    log.removeHandler(handler)


@pytest.mark.redis
def test_logging_consumer_through_a_worker(
    notifications: Notifications, celery_worker: WorkerFactory, events_logger: tuple[str, ListHandler]
) -> None:
    name, handler = events_logger
    hub = notifications.create_hub("Logger")
    hub.register_consumer(LoggingConsumer(name, "warning"))
    with celery_worker():
        event = make_event(title="Grüße")
        notifications.send(event)
        (record,) = wait_for(lambda: handler.records)
    assert record.name == name and record.levelno == logging.WARNING
    assert Event.from_json(record.getMessage()) == event
    assert record.notification_event == event.to_dict()  # type: ignore[attr-defined]


def test_logging_consumer_refuses_unknown_levels() -> None:
    with pytest.raises(ConsumerError, match="Unknown logging level 'loud'"):
        LoggingConsumer("x", "loud")
    assert LoggingConsumer(logging.getLogger("x"), 15).level == 15


# -- two worker processes -------------------------------------------------------


def start_worker(
    env: dict[str, str], name: str, pool: str = "threads", concurrency: int = 2
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.apps.consumers_app:celery",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--hostname",
            name,
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
    )


@contextmanager
def consumers_app_workers(
    names: list[str],
    log: Path,
    redis_url: str,
    unique: str,
    redis_client: redis.Redis[bytes],
    monkeypatch: pytest.MonkeyPatch,
    **options: Any,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run worker processes of :mod:`tests.apps.consumers_app`, one per
    name, isolated by ``unique`` and appending to ``log``, until they are
    ready; stop them after."""
    settings = {
        "CONSUMERS_REDIS_URL": redis_url,
        "CONSUMERS_PREFIX": unique,
        "CONSUMERS_QUEUE": unique,
        "CONSUMERS_LOG": str(log),
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [start_worker(env, f"{name}-{unique}@%h", **options) for name in names]
    try:
        wait_for(lambda: redis_client.scard(f"{unique}:ready") == len(names), timeout=90)
        yield workers
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
        delete_keys(redis_client, unique)


def fresh_consumers_app() -> Any:
    """:mod:`tests.apps.consumers_app` imported anew, with the environment
    the workers got (``from tests.apps import consumers_app`` would return
    the module an earlier test imported)."""
    sys.modules.pop("tests.apps.consumers_app", None)
    return importlib.import_module("tests.apps.consumers_app")


@pytest.fixture
def two_workers(
    redis_url: str, unique: str, tmp_path: Path, redis_client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    log = tmp_path / "events.log"
    with consumers_app_workers(["one", "two"], log, redis_url, unique, redis_client, monkeypatch):
        yield log


@pytest.mark.redis
@pytest.mark.subprocess
@pytest.mark.timeout(300)
def test_two_worker_processes_write_exactly_one_line_per_event(
    two_workers: Path, redis_client: redis.Redis[bytes], unique: str
) -> None:
    consumers_app = fresh_consumers_app()

    n = 200
    events = [
        # Every fifth line is longer than PIPE_BUF, and all are UTF-8.
        make_event(title=f"event {i} ✓", body=("ü" * 3 * PIPE_BUF) if i % 5 == 0 else f"Körper {i}")
        for i in range(n)
    ]
    with consumers_app.app.app_context():
        for event in events:
            consumers_app.notifications.send(event)
    log = two_workers
    wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") >= n, timeout=240)
    pids = wait_for(lambda: redis_client.smembers(f"{unique}:consumed-by"))
    written = read_events(log)
    assert len(written) == n
    assert sorted(e["event_id"] for e in written) == sorted(e["event_id"] for e in events)
    assert {e["event_id"]: e for e in written} == {e["event_id"]: e for e in events}
    assert len(pids) == 2, "both worker processes consumed events"


def blocked_on_flock(pid: int, path: Path) -> bool:
    """Whether process ``pid`` waits for an ``flock`` on ``path``, as the
    kernel lists it in ``/proc/locks`` (``->`` marks a waiting request)."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields:
            at = fields.index("FLOCK")
            owner, device = fields[at + 3], fields[at + 4]
            if int(owner) == pid and device.rsplit(":", 1)[-1] == str(inode):
                return True
    return False


@pytest.mark.redis
@pytest.mark.subprocess
@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_gevent_worker_keeps_running_while_the_log_is_locked(
    redis_url: str, unique: str, tmp_path: Path, redis_client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "events.log"
    log.touch()
    options: dict[str, Any] = {"pool": "gevent", "concurrency": 10}
    with consumers_app_workers(["green"], log, redis_url, unique, redis_client, monkeypatch, **options) as workers:
        (worker,) = workers
        consumers_app = fresh_consumers_app()

        first, second = make_event(title="first"), make_event(title="second")
        with open(log, "ab") as holder, consumers_app.app.app_context():
            # Another process (logrotate, a reader, a slow writer) holds the lock.
            fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
            try:
                consumers_app.notifications.send(first)
                wait_for(lambda: blocked_on_flock(worker.pid, log), timeout=60)
                # While the LogConsumer of the first event waits for the lock,
                # the worker runs the other consumers of the next one.
                consumers_app.notifications.send(second)
                consumed = f"{unique}:consumed"
                wait_for(lambda: redis_client.sismember(consumed, second["event_id"]), timeout=60)
                assert log.read_bytes() == b""
            finally:
                fcntl.flock(holder.fileno(), fcntl.LOCK_UN)
        wait_for(lambda: log.read_bytes().count(b"\n") == 2, timeout=60)
    assert sorted(e["title"] for e in read_events(log)) == ["first", "second"]


def test_fsync_and_custom_format(tmp_path: Path) -> None:
    class TitleLog(LogConsumer):
        def format(self, event: Event) -> str:
            return str(event["title"])

    path = tmp_path / "titles.log"
    consumer = TitleLog(path, fsync=True)
    consumer(make_event(title="first"))
    consumer(make_event(title="second ✓"))
    assert path.read_text("utf-8") == "first\nsecond ✓\n"
    with pytest.raises(ConsumerError, match="returned a line break"):
        consumer(make_event(title="two\nlines"))
    assert path.read_text("utf-8") == "first\nsecond ✓\n"
