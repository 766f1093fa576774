"""The worker class against the oldest and the newest gunicorn of the range
pyproject's ``server`` extra pins: each in a virtualenv of its own (on top of
this one's packages), serving live streams whose chunk framing the test's
client checks, and refusing ``--protocol uwsgi`` where gunicorn has it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from flask_notifications import Event
from tests.apps.sse_app import create_app
from tests.helpers import ROOT, free_port, make_config, wait_for
from tests.helpers.sse_client import SSEClient
from tests.helpers.web_servers import _accepts

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

NEWS = "event-hub-news"
URL = f"/notifications/{NEWS}/events"
#: The ends of the pinned range (pyproject: gunicorn[gevent]>=23,<28).
VERSIONS = ["23.0.0", "27.0.1"]


def _pinned_range() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return text.split('server = ["gunicorn[gevent]', 1)[1].split('"', 1)[0]


def test_the_tested_versions_are_the_ends_of_the_pinned_range() -> None:
    assert _pinned_range() == ">=23,<28"
    assert VERSIONS[0].startswith("23.") and VERSIONS[-1].startswith("27.")


@pytest.fixture(scope="module", params=VERSIONS)
def gunicorn_python(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    version: str = request.param
    venv = tmp_path_factory.mktemp(f"gunicorn-{version}")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The outer venv's packages are visible through a .pth file, after
    # this venv's own site-packages, so the pinned gunicorn wins.
    outer = [p for p in sys.path if p.endswith("site-packages")]
    inner = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(inner, "outer.pth").write_text("\n".join(outer) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", f"gunicorn=={version}"],
        check=True,
        capture_output=True,
    )
    found = subprocess.run(
        [str(python), "-c", "import gunicorn; print(gunicorn.__version__)"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert found == version
    return version, python


def _serve(python: Path, config: dict[str, object], *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SSE_APP_CONFIG": json.dumps(config), "PYTHONPATH": str(ROOT)}
    command = [str(python), "-m", "gunicorn", "-k", "flask_notifications.gunicorn.GeventWorker", "-w", "1", *args]
    return subprocess.Popen(
        [*command, "tests.apps.sse_app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_live_streams_through_each_gunicorn_of_the_range(
    gunicorn_python: tuple[str, Path], redis_url: str, unique: str
) -> None:
    _, python = gunicorn_python
    config = make_config(redis_url, unique, NOTIFICATIONS_BACKEND="redis", SECRET_KEY=unique)
    app = create_app(config)
    backend = app.extensions["notifications"].get_backend(app)
    port = free_port()
    proc = _serve(python, config, "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5")
    try:
        wait_for(lambda: proc.poll() is None and _accepts(port), timeout=60)
        with (
            SSEClient(f"http://127.0.0.1:{port}{URL}") as chunked,
            SSEClient(f"http://127.0.0.1:{port}{URL}", http10=True) as plain,
        ):
            chunked.wait_open()
            plain.wait_open()
            ids = [backend.publish(NEWS, Event(f"e{n}", "news", "t", "b").to_json()).id for n in range(30)]
            assert [e.last_event_id for e in chunked.take(len(ids))] == ids
            assert [e.last_event_id for e in plain.take(len(ids))] == ids
            assert chunked.chunks > 0
            assert plain.chunks == 0
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=20) as response:
                stats = json.loads(response.read())
            assert stats["direct_writes"] > 0
            # SIGTERM: the worker ends its streams with a reconnect event,
            # and gunicorn ends each response.
            proc.terminate()
            assert [e.type for e in chunked.read_to_end(timeout=30)] == ["reconnect"]
            assert chunked.finished
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert b"Traceback" not in stderr


def test_uwsgi_is_refused_where_gunicorn_has_it(gunicorn_python: tuple[str, Path], redis_url: str, unique: str) -> None:
    version, python = gunicorn_python
    config = make_config(redis_url, unique, NOTIFICATIONS_BACKEND="redis", SECRET_KEY=unique)
    proc = _serve(python, config, "-b", "127.0.0.1:0", "--protocol", "uwsgi")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if version.startswith("23."):
        # gunicorn 23 has no --protocol: its own parser refuses it.
        assert b"unrecognized arguments: --protocol" in stderr
    else:
        assert b"serves HTTP only, not --protocol uwsgi" in stderr
