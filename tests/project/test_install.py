"""The documented install, as a newcomer does it.

A bare virtualenv gets only the package and the extras that
docs/installation.rst names, no test dependency, and runs the documented
Celery worker and gunicorn commands of examples/README.rst against the real
Redis; one event sent from the example's form must reach both the worker's
log file and a browser's stream. Then the release files: ``python -m build``
makes a wheel and an sdist that ``twine check`` accepts, and the setuptools
of a stock Python 3.11 virtualenv builds the package too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flask_notifications.event import Event
from tests.helpers import free_port, wait_for
from tests.helpers.example import ROOT

#: Every test here installs from the package index, builds or runs servers.


#: What ``pip install .`` needs from a clone.
SOURCES = ("pyproject.toml", "setup.py", "README.rst", "LICENSE", "flask_notifications")
#: The install command of examples/README.rst for the Redis deployment.
INSTALL = 'pip install ".[redis,server,inbox]"'
#: The inbox's install command (docs/inbox.rst) and its table command.
INBOX_INSTALL = "pip install '.[inbox]' 'psycopg[binary]'"
INIT_DB = "flask notifications inbox init-db"
#: The metrics' install command (docs/operations.rst).
METRICS_INSTALL = 'pip install ".[metrics]"'
#: The documented commands (examples/README.rst), as printed.
WORKER = "celery -A examples.app:celery worker -P gevent -c 50 --loglevel INFO"
SERVER = (
    "gunicorn -k flask_notifications.gunicorn.GeventWorker -w 2 --worker-connections 1000 "
    "-b 127.0.0.1:5000 examples.app:app"
)


def _copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def _run(args: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **options)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


def _bare_env(venv: Path, **extra: str) -> dict[str, str]:
    """An environment with the bare virtualenv first on PATH and nothing of
    the test run's virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env = {k: v for k, v in env.items() if not k.startswith("FLASK_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin"
    env.pop("MAIL_SERVER", None)
    env.update(extra)
    return env


def _stock_venv(path: Path) -> Path:
    """``python -m venv``: pip and, on 3.11, the bundled setuptools, nothing else."""
    _run([sys.executable, "-m", "venv", str(path)])
    return path


def test_the_docs_print_the_commands_this_test_runs() -> None:
    # The library's deployment extras; the example adds ``inbox`` for its bell.
    assert '$ pip install ".[redis,server]"' in (ROOT / "docs" / "installation.rst").read_text()
    readme = (ROOT / "examples" / "README.rst").read_text()
    assert WORKER in readme and SERVER in readme
    assert INSTALL in readme
    inbox = (ROOT / "docs" / "inbox.rst").read_text()
    assert INBOX_INSTALL in inbox and INIT_DB in inbox
    assert METRICS_INSTALL in (ROOT / "docs" / "operations.rst").read_text()


@pytest.fixture
def bare_venv(tmp_path: Path) -> Path:
    src = _copy_sources(tmp_path / "clone")
    venv = _stock_venv(tmp_path / "venv")
    command = INSTALL.replace('"', "").split()  # pip install .[redis,server,inbox]
    _run([str(venv / "bin" / "python"), "-m", *command], cwd=src, env=_bare_env(venv))
    return venv


class _Processes:
    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, command: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(command.split(), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return proc

    def check_alive(self) -> None:
        for proc, log in self.procs:
            assert proc.poll() is None, f"{proc.args} exited:\n{log.read_text(errors='replace')[-4000:]}"

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, log in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sys.stderr.write(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}\n")
        self.procs = []


@pytest.fixture
def processes() -> Iterator[_Processes]:
    running = _Processes()
    yield running
    running.close()


def _answers(url: str, processes: _Processes) -> bool:
    processes.check_alive()
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.subprocess
@pytest.mark.timeout(900)  # pip builds and installs into a new venv: minutes on a loaded machine
def test_the_documented_install_runs_the_documented_commands_bare(
    redis_keys: str,
    bare_venv: Path,
    processes: _Processes,
    redis_url: str,
    unique: str,
    tmp_path: Path,
    redis_client: redis.Redis[bytes],
) -> None:
    python = str(bare_venv / "bin" / "python")
    # Bare: nothing that the tests install came along.
    for module in ("pytest", "hypothesis", "aiosmtpd", "playwright"):
        assert subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode != 0, module

    # The example, outside the clone: flask_notifications comes from the venv.
    run = tmp_path / "run"
    shutil.copytree(ROOT / "examples", run / "examples", ignore=shutil.ignore_patterns("__pycache__", "events.log"))
    log_file = tmp_path / "events.log"
    env = _bare_env(
        bare_venv,
        REDIS_URL=redis_url,
        FLASK_NOTIFICATIONS_KEY_PREFIX=unique,
        FLASK_CELERY_TASK_DEFAULT_QUEUE=unique,
        FLASK_EXAMPLE_LOG_FILE=json.dumps(str(log_file)),
    )
    port = free_port()
    processes.start(WORKER, run, env, tmp_path / "worker.log")
    processes.start(SERVER.replace("127.0.0.1:5000", f"127.0.0.1:{port}"), run, env, tmp_path / "gunicorn.log")
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: _answers(url, processes), timeout=120)
    imported = subprocess.run(
        [python, "-c", "import flask_notifications; print(flask_notifications.__file__)"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(bare_venv) in imported.stdout, imported

    # One event, from the page's form: the worker runs the consumers.
    request = urllib.request.Request(
        url + "send/user",
        data=b"sender=john&recipients=&title=Installed+bare&body=hello",
        headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        sent = json.load(answer)
    assert sent["hubs"] == ["UserHub"]

    def logged() -> list[str]:
        processes.check_alive()
        return log_file.read_text().splitlines() if log_file.exists() else []

    [line] = wait_for(logged, timeout=120)
    assert Event.from_json(line)["event_id"] == sent["event_id"]

    stream = url + "notifications/event-hub-UserHub/events?last_event_id=0-0"
    with urllib.request.urlopen(stream, timeout=60) as events:
        data = ""
        for raw in events:
            text = raw.decode("utf-8").rstrip("\n")
            if text.startswith("data:"):
                data = text.removeprefix("data:").strip()
                break
    assert json.loads(data)["event_id"] == sent["event_id"]

    # Then the documented inbox (PostgreSQL, init-db) and metrics setups, in
    # the same venv: the extras, the table, and a scrape that counts the send.
    processes.close()
    postgres = os.environ.get("INBOX_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    table = "inbox_install_" + unique.replace("-", "_")
    for command in (INBOX_INSTALL, METRICS_INSTALL):
        _run([python, "-m", "pip", *_pip_args(command)], cwd=tmp_path / "clone", env=env)
    env.update(
        FLASK_NOTIFICATIONS_INBOX_URL=postgres,
        FLASK_NOTIFICATIONS_INBOX_TABLE=table,
        FLASK_NOTIFICATIONS_METRICS="true",
    )
    flask = str(bare_venv / "bin" / "flask")
    try:
        _run([flask, "--app", "examples.app", *INIT_DB.split()[1:]], cwd=run, env=env)
        port = free_port()
        processes.start(WORKER, run, env, tmp_path / "worker-2.log")
        processes.start(SERVER.replace("127.0.0.1:5000", f"127.0.0.1:{port}"), run, env, tmp_path / "gunicorn-2.log")
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(url, processes), timeout=120)
        request = urllib.request.Request(
            url + "send/user",
            data=b"sender=john&recipients=tom&title=Stored&body=hello",
            headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.load(answer)["hubs"] == ["UserHub"]

        def unread() -> int:
            processes.check_alive()
            with urllib.request.urlopen(url + "inbox/count", timeout=10) as answer:
                return int(json.load(answer)["unread_count"])

        assert wait_for(lambda: unread() == 1, timeout=120)

        def sent_total() -> float:
            with urllib.request.urlopen(url + "metrics", timeout=10) as answer:
                text = answer.read().decode()
            found = re.search(r"^notifications_events_sent_total (\S+)$", text, re.M)
            return float(found.group(1)) if found else 0.0

        # The two gunicorn workers write to one multiprocess directory, so
        # either of them serves the sum: the one send, whichever took it.
        assert wait_for(lambda: sent_total() >= 1.0, timeout=60)
    finally:
        import sqlalchemy as sa

        engine = sa.create_engine(postgres)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}_versions"'))
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


def _pip_args(command: str) -> list[str]:
    """The arguments after ``pip`` of a documented ``pip install`` command."""
    return command.replace('"', "").replace("'", "").split()[1:]


@pytest.mark.subprocess
@pytest.mark.timeout(900)  # pip builds and installs into a new venv: minutes on a loaded machine
def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(tmp_path: Path) -> None:
    src = _copy_sources(tmp_path / "clone")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)])
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    checked = _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)])
    assert checked.stdout.count("PASSED") == 2, checked.stdout
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [name for name in names if name.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    assert "flask_notifications/py.typed" in names
    for extra in ("redis", "amqp", "mail", "server", "tests", "docs"):
        assert f"Provides-Extra: {extra}\n" in text
    assert "github.com/inveniosoftware" not in text
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("/LICENSE") for name in archive.getnames())


@pytest.mark.subprocess
@pytest.mark.timeout(900)  # pip builds and installs into a new venv: minutes on a loaded machine
def test_the_setuptools_of_a_stock_venv_builds_the_package(tmp_path: Path) -> None:
    """No newer setuptools than the one a Python 3.11 venv bundles (65), so
    builds without isolation, or offline, work. Setuptools before 70 needs
    the ``wheel`` package to make any wheel."""
    venv = _stock_venv(tmp_path / "venv")
    python = str(venv / "bin" / "python")
    version = _run([python, "-c", "import setuptools; print(setuptools.__version__)"]).stdout.strip()
    major = int(re.match(r"\d+", version).group())  # type: ignore[union-attr]
    requires = re.search(r'requires = \["setuptools>=(\d+)"\]', (ROOT / "pyproject.toml").read_text())
    assert requires is not None and int(requires.group(1)) <= major, (version, requires)
    env = _bare_env(venv)
    _run([python, "-m", "pip", "install", "--quiet", "wheel"], env=env)
    src = _copy_sources(tmp_path / "clone")
    _run([python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)], env=env)
    assert len(list(tmp_path.glob("Flask_Notifications-*.whl"))) == 1
