"""A RabbitMQ node of one test's own, on ports of its own, which the test may
SIGKILL without touching the shared RabbitMQ: the node runs the installed
``rabbitmq-server`` as root, with its name, ports, data, logs, cookie and
configuration in a directory of its own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.helpers.waiting import free_port, missing, wait_for

#: The server's start script, run directly: the packaged ``rabbitmq-server``
#: wrapper switches to the ``rabbitmq`` user, which cannot write the test's
#: directory.
SCRIPT_PATHS = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/sbin/rabbitmq-server")


def rabbitmq_server_script() -> str:
    """The ``rabbitmq-server`` script to run, or a skip that says none is installed."""
    for path in SCRIPT_PATHS:
        if os.access(path, os.X_OK):
            return path
    missing("rabbitmq-server is not installed (apt-get install rabbitmq-server)")


class RabbitNode:
    """A private RabbitMQ node: durable queues and persistent messages survive
    its SIGKILL, as on a production node (they are on its disk).

    :param directory: where its data and logs go; a fresh temporary one if ``None``.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.script = rabbitmq_server_script()
        self.dir = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="fn-rabbit-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"fn{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: subprocess.Popen[bytes] | None = None
        conf = f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        (self.dir / "rabbitmq.conf").write_text(conf)
        (self.dir / "rabbitmq-env.conf").write_text("")

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self.dir),  # a cookie of its own
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(self.dir / "feature_flags"),
            RABBITMQ_PID_FILE=str(self.dir / "pid"),
        )
        return env

    def start(self, timeout: float = 120) -> None:
        """Start the node and wait until it takes AMQP connections."""
        assert self.proc is None or self.proc.poll() is not None
        with open(self.dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.script],
                cwd=self.dir,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"rabbitmq-server exited; see {self.dir}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    # The listener opens once the broker has booted; a reply
                    # to the protocol header says it serves AMQP.
                    sock.sendall(b"AMQP\x00\x00\x09\x01")
                    return bool(sock.recv(8))
            except OSError:
                return False

        wait_for(answers, timeout=timeout, interval=0.1)

    def kill(self) -> None:
        """SIGKILL the node (every process of its session), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def remove(self) -> None:
        """Kill the node and delete its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
