"""Metrics across processes, as deployed: two gunicorn workers and a prefork
Celery pool of two share ``PROMETHEUS_MULTIPROC_DIR``; a scrape of either
gunicorn worker serves the sum of all of them, and the Celery worker serves
the same registry on ``NOTIFICATIONS_METRICS_WORKER_PORT``. Where Debian's
``prometheus`` is installed, a real Prometheus scrapes both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_notifications import Event
from flask_notifications.event_hub import hub_id_for
from tests.apps.sse_app import create_app
from tests.helpers import WorkerProcess, free_port, wait_for
from tests.helpers.metrics import scrape, value
from tests.helpers.sse_client import SSEClient
from tests.helpers.web_servers import Gunicorn

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.subprocess]

NEWS = hub_id_for("news")
STREAMS, EVENTS, HUBS = 6, 10, 3


@dataclass
class Deployment:
    web: Gunicorn
    worker: WorkerProcess
    worker_port: int
    app: Flask

    def send(self, count: int, unique: str) -> None:
        with self.app.app_context():
            notifications = self.app.extensions["notifications"]
            for seq in range(count):
                notifications.send(Event(f"{unique}-{seq}", "news", f"event {seq}", "body"))


@pytest.fixture
def deployment(tmp_path: Path, gunicorn_deployment: Callable[..., Gunicorn]) -> Iterator[Deployment]:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    worker_port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    web = gunicorn_deployment(
        workers=2,
        env=env,
        NOTIFICATIONS_METRICS=True,
        NOTIFICATIONS_METRICS_SYNC_INTERVAL=0.2,
        NOTIFICATIONS_METRICS_WORKER_PORT=worker_port,
        NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None,
    )
    config = web.config
    worker = WorkerProcess(
        "tests.apps.worker_app", {**env, "SSE_APP_CONFIG": json.dumps(config)}, tmp_path / "worker.log", pool="prefork"
    )
    worker.start()
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{worker_port}/metrics"), timeout=60)
        # The sending process: the application, without the multiprocess directory.
        yield Deployment(web, worker, worker_port, create_app(config))
    finally:
        # Both wind down at once: each takes seconds of its own.
        stopping = threading.Thread(target=web.stop)
        stopping.start()
        worker.stop()
        stopping.join()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.timeout(240)
def test_gunicorn_workers_and_a_prefork_pool_are_scraped_as_one(deployment: Deployment, unique: str) -> None:
    web = deployment.web.base + "/metrics"
    streams = [SSEClient(f"{deployment.web.base}/notifications/{NEWS}/events") for _ in range(STREAMS)]
    try:
        for stream in streams:
            assert stream.status == 200
        # Both gunicorn workers' streams, whichever one is scraped.
        wait_for(lambda: value(scrape(web), "notifications_streams_open", hub=NEWS) == STREAMS, timeout=60)
        deployment.send(EVENTS, unique)
        for stream in streams:
            assert len(stream.take(EVENTS)) == EVENTS
        consumed = {"hub": NEWS, "consumer": "event-hub-news.PushConsumer", "outcome": "consumed"}
        # A worker records its run and its publish just after the event went
        # out, so the web may stream it before the worker's counters move.
        totals = {
            "notifications_stream_deliveries_total": STREAMS * EVENTS,
            "notifications_backend_publish_seconds_count": HUBS * EVENTS,
        }
        samples = wait_for(lambda: _when_all(scrape(web), totals, consumed))
        # The prefork children's runs, summed with the web workers' counters.
        consumed = _labels(samples, consumed)
        assert value(samples, "notifications_consumer_runs_total", **consumed) == EVENTS
        assert value(samples, "notifications_send_to_consumer_seconds_count", consumer=consumed["consumer"]) == EVENTS
        # Every hub of the app (news, private, closed) pushes every event.
        assert value(samples, "notifications_backend_publish_seconds_count") == HUBS * EVENTS
        assert value(samples, "notifications_stream_listeners") >= 1
        # The Celery worker serves the same registry.
        worker = scrape(f"http://127.0.0.1:{deployment.worker_port}/metrics")
        assert value(worker, "notifications_consumer_runs_total", **_labels(worker, consumed)) == EVENTS
        assert value(worker, "notifications_stream_deliveries_total") == STREAMS * EVENTS
    finally:
        for stream in streams:
            stream.close()


def _labels(samples: Any, wanted: dict[str, str]) -> dict[str, str]:
    """``wanted``, with the consumer name the worker reports for the hub (the
    PushConsumer's task name)."""
    for name, labels in samples:
        found = dict(labels)
        if name == "notifications_consumer_runs_total" and found.get("hub") == wanted["hub"]:
            return {**wanted, "consumer": found["consumer"]}
    return wanted


def _when(samples: Any, name: str, expected: float) -> Any:
    return samples if value(samples, name) == expected else None


def _when_all(samples: Any, expected: dict[str, float], consumed: dict[str, str]) -> Any:
    """``samples`` once every count of ``expected`` and the ``consumed`` runs
    (one per event) are reached, else ``None``."""
    if value(samples, "notifications_consumer_runs_total", **_labels(samples, consumed)) != EVENTS:
        return None
    return samples if all(value(samples, name) == count for name, count in expected.items()) else None


@pytest.mark.timeout(240)
def test_a_real_prometheus_scrapes_the_web_and_worker_endpoints(
    deployment: Deployment, tmp_path: Path, unique: str
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary (Debian: apt-get install prometheus; .ci/run installs it in CI)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    targets = {"web": f"127.0.0.1:{deployment.web.port}", "worker": f"127.0.0.1:{deployment.worker_port}"}
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
        + "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{t}']\n" for job, t in targets.items())
    )
    with open(tmp_path / "prometheus.log", "wb") as log:
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:

        def query(expression: str) -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.loads(response.read())
            except OSError:
                return []
            assert body["status"] == "success"
            return list(body["data"]["result"])

        def scalar(expression: str) -> float | None:
            result = query(expression)
            return float(result[0]["value"][1]) if result else None

        wait_for(lambda: scalar('sum(up{job=~"web|worker"})') == 2, timeout=60, interval=0.5)
        deployment.send(EVENTS, unique)
        expression = f'sum by (job) (notifications_consumer_runs_total{{hub="{NEWS}",outcome="consumed"}})'
        wait_for(
            lambda: len([r for r in query(expression) if float(r["value"][1]) == EVENTS]) == 2, timeout=60, interval=0.5
        )
        wait_for(
            lambda: scalar('sum(notifications_backend_publish_seconds_count{job="web"})') == HUBS * EVENTS,
            timeout=60,
            interval=0.5,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
