"""``inbox.create_all()`` from several processes at once, as the workers of
``gunicorn -w 4`` do when the example boots: every one of them succeeds, on
SQLite and on PostgreSQL (issue 22)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.inbox.conftest import table_name

pytestmark = [pytest.mark.subprocess]

PROCESSES = 6
ROUNDS = 3

_CREATOR = textwrap.dedent(
    """
    import faulthandler, os, sys, time
    # A process still running after 45 s prints where it is and exits, so a
    # hang is reported with its stack instead of as a bare timeout.
    faulthandler.dump_traceback_later(45, exit=True)
    from flask import Flask
    from flask_notifications import Notifications

    url, table, go = sys.argv[1:4]
    app = Flask("creator")
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://",
        NOTIFICATIONS_INBOX_URL=url,
        NOTIFICATIONS_INBOX_TABLE=table,
    )
    notifications = Notifications(app)
    with app.app_context():
        engine = notifications.inbox.engine  # connect before the start line
        while not os.path.exists(go):  # every process starts its CREATE together
            time.sleep(0.001)
        notifications.inbox.create_all()
        notifications.inbox.close()
    """
)


@pytest.mark.subprocess
def test_processes_create_the_schema_at_once(inbox_url: str, unique: str, tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        table = table_name(f"{unique}_{round_}")
        go = tmp_path / f"go-{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _CREATOR, inbox_url, table, str(go)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        try:
            # Let them import and connect, then release them together; a process
            # that is not ready yet only starts later, which is the easy case.
            time.sleep(1.5)
            go.touch()
            errors = [p.communicate(timeout=60)[1] for p in procs]
        finally:
            for proc in procs:  # on a failure too: no process or pipe outlives the test
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
        codes = [p.returncode for p in procs]
        engine = sa.create_engine(inbox_url)
        try:
            names = sa.inspect(engine).get_table_names()
            assert table in names and f"{table}_versions" in names
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}_versions"'))
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            engine.dispose()
        assert codes == [0] * PROCESSES, "\n".join(e for e in errors if e)
