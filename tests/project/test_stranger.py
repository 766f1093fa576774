"""What a newcomer following the documentation ran into, as failing tests.

Each test reproduces a library or packaging problem found by following the
README, docs/installation.rst and the other guides as printed, and now
passes: the problem is fixed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]

#: What ``python -m build`` needs from a clone.
SOURCES = ("pyproject.toml", "setup.py", "README.rst", "LICENSE", "flask_notifications")


def test_the_documented_build_gives_no_setuptools_deprecation_warning(tmp_path: Path) -> None:
    """docs/installation.rst: ``python -m build`` in a clone. The build
    backend it fetches must not warn that this project's metadata will stop
    building."""
    src = tmp_path / "clone"
    src.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    warnings = [line.strip() for line in output.splitlines() if "deprecated" in line.lower()]
    assert warnings == [], warnings


#: A process that only sets the extension up, with metrics on, against a
#: Redis and a broker that are not there; it makes no request and no scrape.
_METRICS_STARTUP = """
import logging
import sys

from flask import Flask

from flask_notifications import Notifications


logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
app = Flask("metrics_startup")
app.config.update(
    REDIS_URL=sys.argv[1],
    CELERY_BROKER_URL=sys.argv[1],
    NOTIFICATIONS_METRICS=True,
)
Notifications(app)
print("set up")
"""


def test_turning_metrics_on_reaches_no_server_before_a_scrape() -> None:
    """docs/operations.rst: the dead letters and the queue depth are "read at
    scrape time". Setting the extension up (every web process, worker and
    ``flask notifications`` command does) must not read them."""
    pytest.importorskip("prometheus_client")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-c", _METRICS_STARTUP, f"redis://127.0.0.1:{port}/0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "set up" in done.stdout, done.stdout
    scrape_logs = [
        line for line in done.stdout.splitlines() if line.startswith("flask_notifications.ops.metrics: Could")
    ]
    assert scrape_logs == [], scrape_logs
