"""A stream served by a worker that cannot hold it open is refused clearly
(issue 23): under gunicorn's default sync worker, or gthread, one open stream
froze the site. Now the stream is a 500 whose JSON names the worker class to
use, the site keeps answering, and the reason is logged once per process."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.event_hub import hub_id_for
from tests.helpers import free_port, make_config, wait_for
from tests.helpers.web_servers import _accepts

ROOT = Path(__file__).resolve().parents[2]
NEWS = hub_id_for("news")

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


def get(port: int, path: str, accept: str = "text/event-stream") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        response = conn.getresponse()
        if response.getheader("Content-Type", "").startswith("text/event-stream"):
            return response.status, response.getheader("Content-Type", ""), b""
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


@pytest.fixture(
    params=[["--worker-class", "sync"], ["--worker-class", "gthread", "--threads", "2"]], ids=["sync", "gthread"]
)
def gunicorn(request: pytest.FixtureRequest, redis_url: str, unique: str, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    config = make_config(redis_url, unique, NOTIFICATIONS_HEALTH_BLUEPRINT=True, NOTIFICATIONS_SSE_PUBLIC=True)
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "SSE_APP_CONFIG": json.dumps(config), "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                "1",
                *request.param,
                "-b",
                f"127.0.0.1:{port}",
                "--timeout",
                "30",
                "tests.apps.sse_app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: proc.poll() is None and _accepts(port) and get(port, "/health/live")[0] == 200, timeout=60)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_stream_is_refused_with_the_worker_class_to_use(gunicorn: tuple[int, Path]) -> None:
    port, log = gunicorn
    for _ in range(2):
        status, content_type, body = get(port, f"/notifications/{NEWS}/events")
        assert status == 500, (status, content_type)
        assert content_type.startswith("application/json")
        message = json.loads(body)["message"]
        assert "gunicorn -k gevent" in message
        # The site still answers: nothing holds the worker.
        assert get(port, "/health/live", accept="application/json")[0] == 200
    assert log.read_text().count("Event streams are refused in this process") == 1, log.read_text()


def test_test_client_and_threaded_dev_server_still_stream(redis_url: str, unique: str) -> None:
    app = Flask("streams")
    app.config.update(make_config(redis_url, unique, NOTIFICATIONS_SSE_BLUEPRINT=True, NOTIFICATIONS_SSE_PUBLIC=True))
    notifications = Notifications(app)
    hub = notifications.create_hub("news")
    try:
        for environ in ({}, {"SERVER_SOFTWARE": "Werkzeug/3.1", "wsgi.multithread": True}):
            response = app.test_client().get(f"/notifications/{hub.hub_id}/events", environ_overrides=environ)
            assert response.status_code == 200
            assert response.mimetype == "text/event-stream"
            response.close()
        refused = app.test_client().get(
            f"/notifications/{hub.hub_id}/events", environ_overrides={"SERVER_SOFTWARE": "gunicorn/23.0.0"}
        )
        assert refused.status_code == 500
        assert "gunicorn -k gevent" in refused.json["message"]
    finally:
        notifications.get_backend(app).close()
