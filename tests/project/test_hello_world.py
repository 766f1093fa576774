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
    (tmp_path / "hello.py").write_text(hello_code(ROOT / "README.rst", "Hello world\n==="))
    env = _env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-W", "error", "hello.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello: world\n"

    port = free_port()
    server = subprocess.Popen(
        ["flask", "--app", "hello", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def stream() -> str:
            assert server.poll() is None, server.communicate()[0]
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
        server.communicate(timeout=30)
