"""The package works as ``pip install Flask-Notifications`` installs it,
without any extra: in a fresh interpreter where the extras' packages cannot
be imported, the README's hello world sends an event and the ``flask
notifications`` commands load; an extra's command says which extra it needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.subprocess]

#: The top-level packages of the extras (pyproject.toml's optional-dependencies).
EXTRAS = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "prometheus_client",
    "pywebpush",
    "py_vapid",
    "http_ece",
    "apprise",
    "flask_mail",
    "gunicorn",
    "gevent",
)

SCRIPT = f"""
import importlib.abc, sys

class WithoutExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {EXTRAS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, WithoutExtras())

from flask import Flask
from flask_notifications import Event, Notifications, PushConsumer

app = Flask("bare")
app.config.update(CELERY_BROKER_URL="memory://", NOTIFICATIONS_BACKEND="memory", CELERY_TASK_ALWAYS_EAGER=True)
notifications = Notifications(app)
hub = notifications.create_hub("news")
hub.register_consumer(PushConsumer(notifications.get_backend(app), hub.hub_id))
with app.app_context():
    dispatch = notifications.send(Event(None, "greeting", "Hello", "world"))
assert dispatch.hub_ids == (hub.hub_id,), dispatch
runner = app.test_cli_runner()
listing = runner.invoke(args=["notifications", "--help"])
assert listing.exit_code == 0 and "inbox" in listing.output, listing.output
inbox = runner.invoke(args=["notifications", "inbox", "init-db"])
print("INBOX", inbox.exit_code, inbox.output)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in {EXTRAS!r})
assert not loaded, loaded
print("OK")
"""


def test_the_hello_world_and_the_commands_need_no_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.endswith("OK\n"), done.stdout + done.stderr
    # The inbox's command needs the inbox extra, and says so.
    inbox = done.stdout.split("INBOX ", 1)[1]
    assert inbox.startswith("1 ") and "inbox" in inbox and "pip install" in inbox, inbox
