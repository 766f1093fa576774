"""Serve :mod:`tests.apps.sse_app` for real: gevent.pywsgi or ``gunicorn -k
gevent`` in a subprocess, or the Flask development server (threaded) in a
thread of the test process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from flask_notifications import Event
from tests.apps.sse_app import create_app
from tests.helpers import free_port, wait_for
from tests.helpers.sse_client import SSEClient
from tests.helpers.waiting import listening_socket

ROOT = Path(__file__).resolve().parents[2]


def _accepts(port: int) -> bool:
    """Whether a server listens on ``port`` (one that binds it itself)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _answers(port: int) -> bool:
    """Whether the app answers HTTP on ``port``. A connection alone proves
    nothing: the socket a test binds for gunicorn accepts connections before
    the worker has booted, and the first request then waited out its boot."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return sock.recv(5) == b"HTTP/"
    except OSError:
        return False


class Server:
    """An SSE app served on ``127.0.0.1:port``.

    :param kind: ``gevent``, ``gunicorn`` (with the worker class of
        :mod:`flask_notifications.gunicorn`), ``gunicorn-gevent`` (gunicorn's
        own ``-k gevent``) or ``threaded``.
    :param config: the app's config (JSON-serialisable).
    :param sndbuf: ``SO_SNDBUF`` of every accepted connection (0: default).
    :param log: a file that receives the server process's standard error.
    """

    def __init__(self, kind: str, config: dict[str, Any], sndbuf: int = 0, log: Path | None = None) -> None:
        self.kind = kind
        self.config = config
        self.sndbuf = sndbuf
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self.app: Any = None
        self._backend: Any = None
        self.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.kind == "threaded":
            self.app = create_app(self.config)
            self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
            if self.sndbuf:
                self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
            self._thread.start()
        else:
            config = dict(self.config)
            if self.kind.startswith("gunicorn") and self.sndbuf:
                config["SSE_TEST_SNDBUF"] = self.sndbuf
            env = {**os.environ, "SSE_APP_CONFIG": json.dumps(config), "PYTHONPATH": str(ROOT)}
            listener = None
            if self.kind == "gevent":
                command = [sys.executable, "-m", "tests.apps.serve_sse", str(self.port), str(self.sndbuf)]
            else:
                worker = "gevent" if self.kind == "gunicorn-gevent" else "flask_notifications.gunicorn.GeventWorker"
                listener = listening_socket(self.port)
                command = [
                    *(sys.executable, "-m", "gunicorn", "-k", worker, "-w", "1"),
                    *("-b", f"fd://{listener.fileno()}", "--graceful-timeout", "1", "--log-level", "warning"),
                    "tests.apps.sse_app:create_app()",
                ]
            stderr = None if self.log is None else open(self.log, "ab")  # noqa: SIM115 - the child holds it
            try:
                self.proc = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    pass_fds=() if listener is None else (listener.fileno(),),
                )
            finally:
                if stderr is not None:
                    stderr.close()
                if listener is not None:
                    listener.close()  # gunicorn holds its copy
        wait_for(lambda: self._alive() and _answers(self.port), timeout=60)

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"The {self.kind} server exited with {self.proc.returncode}.")
        return True

    @property
    def backend(self) -> Any:
        """The backend of an app with the server's config in this process
        (the server's own, when it runs in a thread): publish from it as a
        worker's PushConsumer does."""
        if self._backend is None:
            app = self.app if self.app is not None else create_app(self.config)
            self._backend = app.extensions["notifications"].get_backend(app)
        return self._backend

    def worker_pid(self) -> int:
        """The pid of the process that serves the streams (gunicorn's worker)."""
        assert self.proc is not None
        if not self.kind.startswith("gunicorn"):
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return int(wait_for(lambda: children.read_text().split())[0])

    def log_text(self) -> str:
        """What the server process wrote to standard error so far."""
        return self.log.read_text(errors="replace") if self.log is not None and self.log.exists() else ""

    def kill(self) -> None:
        """Stop at once, as a crash would (SIGKILL); a no-op if stopped."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None
        if self._server is not None:
            self.app.extensions["notifications"].runtime(self.app).close_streams()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- talking to it ------------------------------------------------------------

    def stream(self, path: str, **options: Any) -> SSEClient:
        return SSEClient(self.base + path, **options)

    def status(self, path: str, **options: Any) -> int:
        """The status a stream request gets (the connection is closed)."""
        with self.stream(path, **options) as client:
            return client.status

    def request(self, method: str, path: str, data: bytes | None = None, cookie: str | None = None) -> Any:
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if cookie:
            request.add_header("Cookie", cookie)
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.headers, json.loads(response.read())

    def publish(self, hub_id: str, event: Event) -> str:
        """Publish through the server's own backend (as PushConsumer does)."""
        if self.app is not None:  # in this process: skip the slow development server
            return self.app.extensions["notifications"].get_backend(self.app).publish(hub_id, event.to_json()).id
        return str(self.request("POST", f"/publish/{hub_id}", event.to_json().encode())[1]["id"])

    def get_status(self, path: str) -> int:
        """The status of a plain GET."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=20) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def login(self, user: str) -> dict[str, str]:
        """The headers of a browser logged in as ``user`` (its session cookie)."""
        headers, _ = self.request("POST", f"/login/{user}")
        return {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}

    def stats(self) -> dict[str, int]:
        return dict(self.request("GET", "/stats")[1])


def children(pid: int) -> set[int]:
    """The pids of the live child processes of ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


class Gunicorn:
    """``gunicorn -k gevent`` serving :mod:`tests.apps.sse_app` with several
    workers and a configuration file of this package's hooks, as a
    deployment runs it; the test may signal the master.

    :param config: the app's config (JSON-serialisable).
    :param directory: where its configuration file and log go.
    :param workers: gunicorn workers.
    :param hooks: import the hooks of :mod:`flask_notifications.ops.gunicorn`.
    :param env: more environment variables (``PROMETHEUS_MULTIPROC_DIR``).
    :param worker_class: gunicorn's ``-k``.
    """

    def __init__(
        self,
        config: dict[str, Any],
        directory: Path,
        *,
        workers: int = 2,
        hooks: bool = True,
        graceful_timeout: int = 30,
        env: dict[str, str] | None = None,
        worker_class: str = "gevent",
    ) -> None:
        self.config = config
        self.port = free_port()
        listener = listening_socket(self.port)
        self.log = directory / "gunicorn.log"
        conf = directory / "gunicorn.conf.py"
        conf.write_text(
            (
                "from flask_notifications.ops.gunicorn import child_exit, post_worker_init  # noqa: F401\n"
                if hooks
                else ""
            )
            + f"bind = 'fd://{listener.fileno()}'\nworkers = {workers}\nworker_class = '{worker_class}'\n"
            + f"graceful_timeout = {graceful_timeout}\nloglevel = 'info'\n"
        )
        environment = {
            **os.environ,
            **(env or {}),
            "SSE_APP_CONFIG": json.dumps(config),
            "PYTHONPATH": str(ROOT),
        }
        with open(self.log, "ab") as out, listener:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(conf), "tests.apps.sse_app:create_app()"],
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
            )
        self.workers = workers
        wait_for(lambda: self._alive() and _answers(self.port) and len(self.worker_pids()) == workers, timeout=60)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
        return True

    def worker_pids(self) -> set[int]:
        return children(self.proc.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=20) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
