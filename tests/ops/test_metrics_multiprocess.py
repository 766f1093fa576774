"""Metrics never silently under-count (issue 23): with NOTIFICATIONS_METRICS
on and no PROMETHEUS_MULTIPROC_DIR, a prefork Celery worker's port shows the
runs of its pool (the extension sets a multiprocess directory up before
prometheus_client is imported), or, when it is too late for that, the worker
refuses to start, saying what to set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flask_notifications import Event
from tests.apps.sse_app import create_app
from tests.helpers import ROOT, WorkerProcess, free_port, make_config, wait_for
from tests.helpers.metrics import Samples, scrape
from tests.helpers.sse_client import SSEClient
from tests.helpers.web_servers import _accepts

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

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


def test_gunicorn_workers_scrapes_agree_without_a_directory(config: dict[str, object], tmp_path: Path) -> None:
    """``gunicorn -w 2`` as a newcomer starts it, in a session of its own:
    every scrape, whichever worker answers, counts the streams of both."""
    _scrapes_of_two_workers_agree("tests.apps.sse_app:create_app()", config, tmp_path)


def test_the_docs_wsgi_snippet_under_gunicorn_counts_every_worker(config: dict[str, object], tmp_path: Path) -> None:
    """Issue 23 (hostile review): docs/operations.rst's ``from
    flask_notifications.metrics import make_wsgi_app``, at the top of the
    application's module, imported prometheus_client before ``init_app``
    could set up the multiprocess directory, so no ``gunicorn -w 2`` worker
    booted. The snippet runs verbatim (tests/ops/docs_metrics_app.py), its
    endpoint the only one (``NOTIFICATIONS_METRICS_URL = None``)."""
    from tests.ops.docs_metrics_app import IMPORTS

    assert "from flask_notifications.metrics import make_wsgi_app" in IMPORTS
    _scrapes_of_two_workers_agree(
        "tests.ops.docs_metrics_app:create_app()", {**config, "NOTIFICATIONS_METRICS_URL": None}, tmp_path
    )


def test_the_docs_wsgi_snippet_in_a_prefork_worker_counts_its_pool(
    config: dict[str, object], tmp_path: Path, unique: str, redis_client: redis.Redis[bytes]
) -> None:
    """The same snippet in the module a prefork Celery worker loads: the
    worker starts, and its port shows every run of its pool."""
    worker = WorkerProcess(
        "tests.ops.docs_metrics_app", {"SSE_APP_CONFIG": json.dumps(config)}, tmp_path / "worker.log", pool="prefork"
    )
    worker.start()
    url = f"http://127.0.0.1:{config['NOTIFICATIONS_METRICS_WORKER_PORT']}/metrics"
    try:

        def up() -> bool:
            assert worker.proc is not None and worker.proc.poll() is None, worker.output()
            return _answers(url)

        wait_for(up, timeout=60)
        app = create_app(config)
        with app.app_context():
            for seq in range(EVENTS):
                app.extensions["notifications"].send(Event(f"{unique}-{seq}", "news", f"event {seq}", "body"))
        wait_for(lambda: consumed(scrape(url)) == EVENTS * HUBS, timeout=60)
        app.extensions["notifications"].get_backend(app).close()
    finally:
        worker.stop()


def _scrapes_of_two_workers_agree(target: str, config: dict[str, object], tmp_path: Path) -> None:
    news = "event-hub-news"
    port = free_port()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "from flask_notifications.ops.gunicorn import child_exit, post_worker_init  # noqa: F401\n"
        f"bind = '127.0.0.1:{port}'\nworkers = 2\nworker_class = 'gevent'\n"
    )
    web_config = {
        **config,
        "NOTIFICATIONS_METRICS_SYNC_INTERVAL": 0.2,
        "NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT": None,
    }
    env = {**os.environ, "SSE_APP_CONFIG": json.dumps(web_config), "PYTHONPATH": str(ROOT)}
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(conf), target],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/metrics"
    streams: list[SSEClient] = []
    try:

        def up() -> bool:
            assert proc.poll() is None, f"gunicorn exited:\n{log.read_text(errors='replace')[-3000:]}"
            return _accepts(port) and _answers(url)

        wait_for(up, timeout=60)

        # Open streams until one worker answers that it holds only some of them.
        def spread() -> bool:
            streams.append(SSEClient(f"http://127.0.0.1:{port}/notifications/{news}/events"))
            assert streams[-1].status == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=20) as response:
                return len(streams) >= 2 and json.load(response)["connections"] < len(streams)

        wait_for(spread, timeout=60, interval=0.05)

        def opened() -> float:
            return scrape(url).get(("notifications_streams_opened_total", frozenset()), 0.0)

        wait_for(lambda: opened() == len(streams), timeout=60)
        assert [opened() for _ in range(20)] == [len(streams)] * 20, log.read_text()
    finally:
        for stream in streams:
            stream.close()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_importing_the_metrics_elsewhere_leaves_one_process_counting_alone(tmp_path: Path) -> None:
    """The directory is set up at import only in a gunicorn or ``celery
    worker`` process: a shell, ``flask run`` or a test run that imports the
    metrics module stays in single-process mode (and its children inherit no
    directory)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\nfrom flask_notifications.metrics import make_wsgi_app, multiprocess_mode\n"
            "print(os.environ.get('PROMETHEUS_MULTIPROC_DIR'), multiprocess_mode())",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "False"], done.stdout
