"""A dispatch reaches only a worker that knows it (issue 23): a worker
started from a plain ``Celery()`` on the same broker and default queue never
takes this extension's tasks, which wait in their own queue for the app's
worker, started as documented (``celery -A app:celery worker``, no ``-Q``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from flask_notifications import Event
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


@contextmanager
def worker(app: str, env: dict[str, str], log: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "solo", "--loglevel", "INFO", *options],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_foreign_worker_never_takes_a_dispatch(
    redis_url: str, unique: str, redis_client: redis.Redis[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default_queue = f"{unique}-default"
    settings = {"FOREIGN_REDIS_URL": redis_url, "FOREIGN_PREFIX": unique, "FOREIGN_QUEUE": default_queue}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    from . import own_app

    app = own_app.create_app()
    try:
        with worker("tests.worker.foreign_app:celery", env, tmp_path / "foreign.log"):
            wait_for(lambda: redis_client.scard(f"{unique}:foreign-ready") == 1, timeout=60)
            with app.app_context():
                event = Event(None, "test", "For the app's worker", "")
                dispatch = own_app.notifications.send(event)
            assert dispatch.task_id is not None
            # Whatever the foreign worker would take, it has taken.
            wait_for(lambda: redis_client.llen(default_queue) == 0, timeout=30)
            with worker("tests.worker.own_app:celery", env, tmp_path / "own.log"):
                wait_for(
                    lambda: redis_client.sismember(f"{unique}:consumed", event["event_id"]),
                    timeout=60,
                )
        foreign_log = (tmp_path / "foreign.log").read_text()
        assert "unregistered" not in foreign_log.lower(), foreign_log
        # The app's worker, started without -Q, consumes the queue: no complaint.
        assert "Start the worker with -Q" not in (tmp_path / "own.log").read_text()
    finally:
        keys = list(redis_client.scan_iter(f"{unique}*"))
        if keys:
            redis_client.delete(*keys)
        own_app.notifications.get_backend(app).close()


def test_a_worker_that_leaves_the_queue_out_says_so(
    redis_url: str, unique: str, redis_client: redis.Redis[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-Q <default queue>``, as many deployments start workers: the
    extension's tasks would wait in their own queue unseen; the worker's log
    says which queue to add (a hostile review of issue 23 found it silent)."""
    default_queue = f"{unique}-default"
    monkeypatch.setenv("FOREIGN_REDIS_URL", redis_url)
    monkeypatch.setenv("FOREIGN_PREFIX", unique)
    monkeypatch.setenv("FOREIGN_QUEUE", default_queue)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "own.log"
    try:
        with worker("tests.worker.own_app:celery", env, log, "-Q", default_queue):
            wait_for(lambda: "Start the worker with -Q" in log.read_text(), timeout=60)
        text = log.read_text()
        assert f"-Q {default_queue},{unique}" in text, text
    finally:
        keys = list(redis_client.scan_iter(f"{unique}*"))
        if keys:
            redis_client.delete(*keys)
