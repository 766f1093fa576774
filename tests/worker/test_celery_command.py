"""``celery -A app worker``, without ``:celery``, takes the module's Flask
application for its Celery app; the error says what to type (issue 23)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

APP = """
from flask import Flask
from flask_notifications import Notifications

app = Flask(__name__)
app.config.update(NOTIFICATIONS_BACKEND="memory", CELERY_BROKER_URL="memory://")
notifications = Notifications(app)
celery = notifications.get_celery(app)
"""


@pytest.mark.subprocess
def test_celery_a_module_without_celery_says_what_to_type(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "app", "worker"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode != 0
    assert "Run 'celery -A app:celery worker'" in done.stderr, done.stderr
    assert "user_options" not in done.stderr
