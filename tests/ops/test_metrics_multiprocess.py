"""Metrics never silently under-count (issue 23): with NOTIFICATIONS_METRICS
on and no PROMETHEUS_MULTIPROC_DIR, a prefork Celery worker's port shows the
runs of its pool (the extension sets a multiprocess directory up before
prometheus_client is imported), or, when it is too late for that, the worker
refuses to start, saying what to set."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flask_notifications import Event

from ..apps.sse_app import create_app
from ..conftest import make_config
from ..helpers import free_port, wait_for
from ..metrics_helpers import Samples, scrape
from ..reliability.conftest import WorkerProcess

pytestmark = pytest.mark.server

EVENTS = 4
#: Hubs of tests.apps.sse_app with a PushConsumer: every event runs three.
HUBS = 3


def consumed(samples: Samples) -> float:
    return sum(
        count
        for (name, labels), count in samples.items()
        if name == "notifications_consumer_runs_total" and ("outcome", "consumed") in labels
    )


@pytest.fixture
def config(redis_url: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return make_config(redis_url, unique, NOTIFICATIONS_METRICS=True, NOTIFICATIONS_METRICS_WORKER_PORT=free_port())


@pytest.fixture
def prefork_worker(config: dict[str, object], tmp_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(
        "tests.apps.worker_app", {"SSE_APP_CONFIG": json.dumps(config)}, tmp_path / "worker.log", pool="prefork"
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def test_prefork_worker_port_counts_its_pool_without_a_directory(
    config: dict[str, object], prefork_worker: WorkerProcess, unique: str, redis_client: redis.Redis[bytes]
) -> None:
    url = f"http://127.0.0.1:{config['NOTIFICATIONS_METRICS_WORKER_PORT']}/metrics"
    wait_for(lambda: _answers(url), timeout=60)
    app = create_app(config)
    with app.app_context():
        for seq in range(EVENTS):
            app.extensions["notifications"].send(Event(f"{unique}-{seq}", "news", f"event {seq}", "body"))
    wait_for(lambda: consumed(scrape(url)) == EVENTS * HUBS, timeout=60)
    app.extensions["notifications"].get_backend(app).close()


def test_prefork_worker_refuses_when_too_late_to_set_a_directory(config: dict[str, object], tmp_path: Path) -> None:
    worker = WorkerProcess(
        "tests.ops.early_prometheus_app",
        {"SSE_APP_CONFIG": json.dumps(config)},
        tmp_path / "worker.log",
        pool="prefork",
    )
    worker.start()
    try:
        assert worker.proc is not None
        returncode = worker.proc.wait(timeout=60)
    finally:
        worker.stop()
    log = worker.log.read_text()
    assert returncode != 0, log
    assert "ConfigurationError" in log and "Set PROMETHEUS_MULTIPROC_DIR" in log, log


def _answers(url: str) -> bool:
    try:
        scrape(url)
    except OSError:
        return False
    return True
