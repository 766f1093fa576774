"""The in-memory hello world of README.rst and docs/index.rst runs as
printed, with no server: its consumer prints the event, and ``flask run``
serves the hub's stream with the event in it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for
from tests.helpers.example import ROOT

STREAM = "/notifications/event-hub-Greetings/events?last_event_id=0-0"


def hello_code(path: Path, after: str) -> str:
    """The first Python block after the line ``after`` in ``path``."""
    text = path.read_text()
    [block] = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text[text.index(after) :])[:1]
    return re.sub(r"^    ", "", block, flags=re.MULTILINE)


def test_the_readme_and_the_docs_show_the_same_hello_world() -> None:
    readme = hello_code(ROOT / "README.rst", "Hello world\n===")
    assert readme == hello_code(ROOT / "docs" / "index.rst", "A hello world")
    assert len(readme.strip().splitlines()) <= 30
    for page in (ROOT / "README.rst", ROOT / "docs" / "index.rst"):
        assert f'curl -N "http://127.0.0.1:5000{STREAM}"' in page.read_text()


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CELERY_", "REDIS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.subprocess
def test_the_hello_world_runs_as_printed_with_no_server(tmp_path: Path) -> None:
    code = hello_code(ROOT / "README.rst", "Hello world\n===")
    # Snippets send from a request or a CLI command, never at import (issue 23).
    assert "\nwith app.app_context():" not in code
    (tmp_path / "hello.py").write_text(code)
    env = _env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-W", "error", "hello.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, ""), done.stderr

    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            ["flask", "--app", "hello", "run", "--port", str(port)],
            cwd=tmp_path,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:

        def post() -> bool:
            assert server.poll() is None, log.read_text()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/hello", method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(post, timeout=60)
        wait_for(lambda: "Hello: world" in log.read_text(), timeout=30)

        def stream() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{STREAM}", timeout=30) as events:
                    for raw in events:
                        line = raw.decode("utf-8").rstrip("\n")
                        if line.startswith("data:"):
                            return line.removeprefix("data:").strip()
            except OSError:
                return ""
            return ""

        event = json.loads(wait_for(stream, timeout=60))
        assert (event["event_type"], event["title"], event["body"]) == ("greeting", "Hello", "world")
    finally:
        server.terminate()
        server.wait(timeout=30)
