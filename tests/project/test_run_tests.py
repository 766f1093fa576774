"""run-tests.sh, as contributors and CI run it: it stops what it started
and leaves alone what was running; a missing service fails a test in CI
instead of skipping it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, missing, wait_for
from tests.helpers.example import ROOT

#: Prints whether a RabbitMQ answers at AMQP_URL, from inside run-tests.sh.
PROBE = """
import os
from kombu.connection import Connection
conn = Connection(os.environ["AMQP_URL"], connect_timeout=2)
try:
    conn.ensure_connection(max_retries=0)
    print("RabbitMQ answers")
finally:
    conn.release()
"""


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run_tests_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(VIRTUAL_ENV=str(Path(sys.executable).parent.parent), **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _services(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "run-tests.sh"), "--services", "--", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def private_rabbitmq(unique: str) -> Iterator[dict[str, str]]:
    """The environment of a RabbitMQ node of this test's own (stopped), on
    free ports, as ``rabbitmq-server -detached`` starts it."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        missing("rabbitmq-server is not installed")
    if os.geteuid() != 0:
        pytest.skip("starting a private RabbitMQ node through Debian's wrapper needs root")
    # The node runs as the rabbitmq user: a directory it can write to.
    base = Path(tempfile.mkdtemp(prefix="fn-rabbitmq-"))
    base.chmod(0o777)
    port, dist_port = free_port(), free_port()
    (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    (base / "enabled_plugins").write_text("[].\n")
    node = f"{unique}@localhost"
    env = {
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}//",
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
    }
    try:
        yield env
    finally:
        # Whatever happened, the node goes: it is this test's own.
        if _answers(port):
            subprocess.run(["rabbitmqctl", "-n", node, "shutdown"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.subprocess
def test_run_tests_stops_the_rabbitmq_it_started(private_rabbitmq: dict[str, str]) -> None:
    port = int(private_rabbitmq["RABBITMQ_NODE_PORT"])
    assert not _answers(port)
    done = _services(_run_tests_env(**private_rabbitmq), sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    assert "starting rabbitmq-server -detached" in done.stderr
    assert done.stdout == "RabbitMQ answers\n"
    assert "stopping the RabbitMQ that run-tests.sh started" in done.stderr
    assert "shutdown failed" not in done.stderr
    wait_for(lambda: not _answers(port), timeout=60)


@pytest.mark.subprocess
def test_run_tests_leaves_a_running_rabbitmq_alone() -> None:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    probe = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, "AMQP_URL": url}, capture_output=True)
    if probe.returncode != 0:
        missing(f"no RabbitMQ answers at {url}")
    done = _services(_run_tests_env(AMQP_URL=url), sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    assert f"using RabbitMQ at {url}" in done.stderr
    assert "stopping" not in done.stderr
    assert _services(_run_tests_env(AMQP_URL=url), sys.executable, "-c", PROBE).stdout == "RabbitMQ answers\n"


def test_a_missing_service_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="^no RabbitMQ here$"):
        missing("no RabbitMQ here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="^no RabbitMQ here; in CI, .ci/run installs and starts"):
        missing("no RabbitMQ here")
