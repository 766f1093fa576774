"""Cold boots of the example as a deployment starts it, ``gunicorn -w 4``,
on a fresh database each time (a SQLite file, a PostgreSQL database): the
four workers import the app at once, and each creates the inbox's, the
preferences' and the push subscriptions' tables at import. Every worker
boots, every time (two workers booting at once once took the server down
with "table ... already exists")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import ROOT, free_port, wait_for
from tests.helpers.waiting import listening_socket

pytestmark = [pytest.mark.subprocess]

BOOTS = int(os.environ.get("COLD_BOOTS", "10"))
WORKERS = 4

#: gunicorn's configuration: each worker says so once it has imported the app.
HOOKS = "def post_worker_init(worker):\n    worker.log.warning('worker %s booted', worker.pid)\n"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A callable that gives the URL of a database no boot has used."""
    if request.param == "sqlite":
        yield lambda boot: f"sqlite:///{tmp_path / f'boot-{boot}.sqlite3'}"
        return
    url = sa.engine.make_url(request.getfixturevalue("postgres_url"))
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def create(boot: int) -> str:
        name = f"coldboot_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        made.append(name)
        return url.set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def _boot(database: str, directory: Path) -> str:
    """Start ``gunicorn -w 4`` of the example on ``database``; return its log
    once every worker booted or the master stopped, and stop it."""
    directory.mkdir()
    (directory / "hooks.py").write_text(HOOKS)
    log = directory / "gunicorn.log"
    env = {**os.environ, "FLASK_NOTIFICATIONS_INBOX_URL": database, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    env.pop("REDIS_URL", None)  # the embedded default, as the quickstart runs it
    listener = listening_socket(free_port())
    command = [sys.executable, "-m", "gunicorn", "-k", "flask_notifications.gunicorn.GeventWorker"]
    command += ["-w", str(WORKERS), "-b", f"fd://{listener.fileno()}", "-c", str(directory / "hooks.py")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "examples.app:app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
            start_new_session=True,
        )
    listener.close()
    try:
        wait_for(lambda: proc.poll() is not None or log.read_text().count(" booted") >= WORKERS, timeout=120)
        # A worker that fails after its siblings booted still shows.
        time.sleep(1)
        return log.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.timeout(60 + 40 * BOOTS)
def test_every_worker_of_gunicorn_w_4_boots_on_a_fresh_database(fresh_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for boot in range(BOOTS):
        log = _boot(fresh_database(boot), tmp_path / f"boot-{boot}")
        assert "Worker failed to boot" not in log and "Traceback" not in log, f"boot {boot + 1}:\n{log}"
        assert log.count(" booted") == WORKERS, f"boot {boot + 1}:\n{log}"
