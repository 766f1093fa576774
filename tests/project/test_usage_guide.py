"""The original documentation's Usage guide, run at module level as printed
(tests/apps/usage_app.py), delivered by a real worker process that imports
the same module, over the real Redis broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_notifications.event import Event
from flask_notifications.pubsub.redis_pubsub import RedisPubSub
from tests.helpers import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects written one after the other, as the guide's
    ``f.write(str(event))`` writes them (with no separator)."""
    decoder = json.JSONDecoder()
    found, index = [], 0
    while index < len(text):
        try:
            value, index = decoder.raw_decode(text, index)
        except ValueError:  # the worker is still writing
            break
        found.append(value)
    return found


@pytest.fixture
def usage_env(
    redis_url: str, redis_keys: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    # The guide's app, its worker and this test all use the suite's Redis
    # (REDIS_URL, whatever its database), and the test's keys and queue.
    env = {
        "USAGE_REDIS_URL": redis_url,
        "USAGE_QUEUE": redis_keys,
        "USAGE_PREFIX": redis_keys,
        "USAGE_LOG": str(tmp_path / "events.log"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delitem(sys.modules, "tests.apps.usage_app", raising=False)
    yield env


@pytest.fixture
def worker_process(usage_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, **usage_env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.apps.usage_app:celery",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def test_usage_guide_runs_at_module_level_as_printed(
    usage_env: dict[str, str], worker_process: subprocess.Popen[bytes], redis_url: str
) -> None:
    # Importing the guide sends its two events, outside any app context. It
    # runs in a process of its own, as a user's web process would: in the
    # test process, FlaskCeleryExt(app).celery would hand out whatever Celery
    # app an earlier test left current, with that test's queue.
    env = {**os.environ, **usage_env, "PYTHONPATH": str(ROOT)}
    script = (
        "import json, tests.apps.usage_app as u; "
        "print(json.dumps([u.passed.to_json(), u.filtered.to_json(), u.test_hub_id]))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    passed_json, filtered_json, test_hub_id = json.loads(done.stdout.decode().strip().splitlines()[-1])
    passed, filtered = Event.from_json(passed_json), Event.from_json(filtered_json)
    log = Path(usage_env["USAGE_LOG"])
    # The worker imported the guide too, and so sent its own two events.
    # A worker process starting beside a parallel suite may take a while:
    # the timeout only bounds a hang.
    written = wait_for(lambda: log.exists() and len(json_objects(log.read_text())) == 2 and log.read_text(), timeout=90)
    events = [Event.from_dict(found) for found in json_objects(written)]
    ids = {event["event_id"] for event in events}
    assert passed["event_id"] in ids and filtered["event_id"] not in ids
    assert all(event["event_type"] == "test" for event in events)
    assert passed in events
    backend = RedisPubSub(url=redis_url, key_prefix=usage_env["USAGE_PREFIX"])
    try:
        messages = wait_for(
            lambda: (found := backend.history(test_hub_id, None).messages) and len(found) == 2 and found,
            timeout=90,
        )
    finally:
        backend.close()
    pushed = [Event.from_json(message.data) for message in messages]
    assert passed in pushed and all(event["event_type"] == "test" for event in pushed)
    assert worker_process.poll() is None
