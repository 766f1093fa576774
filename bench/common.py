"""Helpers shared by the bench drivers (``bench.run``, ``bench.per_user``):
child processes, ports, CPU and memory readings, percentiles, the machine
and its load, and the open-files limit.
"""

from __future__ import annotations

import contextlib
import os
import platform
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process, with its stdout lines in a queue when ``lines``."""

    def __init__(
        self, cmd: list[str], env: dict[str, str], log: Path, lines: bool = False, cwd: Path | str = ROOT
    ) -> None:
        self.cmd = cmd
        self.log = log
        self._logf = open(log, "wb")  # noqa: SIM115
        self.lines: queue.Queue[str] = queue.Queue()
        self.popen = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if lines else subprocess.DEVNULL,
            stdout=subprocess.PIPE if lines else self._logf,
            stderr=self._logf,
            start_new_session=True,
        )
        if lines:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").strip())
        self.lines.put("")

    def expect(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.cmd[2:4]} did not say {word} in {timeout:.0f}s; log: {self.tail()}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line.startswith(word):
                return line
            if line == "" and self.popen.poll() is not None:
                raise RuntimeError(f"{self.cmd[2:4]} exited ({self.popen.returncode}); log: {self.tail()}")

    def write(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text.encode() + b"\n")
        self.popen.stdin.flush()

    def tail(self) -> str:
        if not self._logf.closed:
            self._logf.flush()
        return self.log.read_text(errors="replace")[-1500:]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._logf.close()


def wait_port(port: int, proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"server exited ({proc.popen.returncode}): {proc.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"server did not listen on {port}: {proc.tail()}")


def serving_pid(proc: Proc) -> int:
    """The process that holds the connections: gunicorn's one worker, or the process itself."""
    return serving_pids(proc, 1)[0]


def serving_pids(proc: Proc, workers: int) -> list[int]:
    """The processes that hold the connections: gunicorn's (or nginx's)
    ``workers`` children, or the process itself."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not any(name in " ".join(proc.cmd) for name in ("gunicorn", "nginx")):
            return [proc.popen.pid]
        children = psutil.Process(proc.popen.pid).children()
        if len(children) >= workers:
            return [child.pid for child in children]
        time.sleep(0.1)
    raise RuntimeError(f"{proc.cmd[:3]} started fewer than {workers} workers: {proc.tail()}")


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def gunicorn(
    target: str, port: int, worker: str = "gevent", workers: int = 1, hosts: tuple[str, ...] = ("127.0.0.1",)
) -> list[str]:
    """``gunicorn`` serving ``target`` with ``workers`` processes, listening on ``port`` of each of ``hosts``."""
    binds = [arg for host in hosts for arg in ("-b", f"{host}:{port}")]
    return [
        PY,
        "-m",
        "gunicorn",
        "-k",
        worker,
        "-w",
        str(workers),
        "--worker-connections",
        "20000",
        "--backlog",
        "4096",
        "--graceful-timeout",
        "2",
        "--log-level",
        "warning",
        *binds,
        target,
    ]


def pct(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max())}


def latency_sample(lat: np.ndarray, limit: int = 2000) -> list[float]:
    """A sorted, evenly thinned copy of ``lat`` for the CDF plot."""
    ordered = np.sort(lat)
    if len(ordered) > limit:
        ordered = ordered[np.linspace(0, len(ordered) - 1, limit).astype(int)]
    return [round(float(v), 3) for v in ordered]


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(client: redis.Redis[bytes]) -> dict[str, Any]:
    import flask
    import gevent
    import gunicorn

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = client.info("server")
    return {
        "nproc": sh("nproc"),
        "cpu": cpu,
        "free": sh("free -h"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            "flask": flask.__version__,
            "gevent": gevent.__version__,
            "gunicorn": gunicorn.__version__,
            "redis-py": redis.__version__,
            "redis-server": info.get("redis_version", "?"),
            "flask-sse": _version("flask-sse"),
            "flask-socketio": _version("flask-socketio"),
            "python-socketio": _version("python-socketio"),
            "gevent-websocket": _version("gevent-websocket"),
            "celery": _version("celery"),
        },
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "nofile_found": list(NOFILE_FOUND),
        "commit": sh(f"git -C {ROOT} rev-parse --short HEAD")
        + (" (with uncommitted changes)" if sh(f"git -C {ROOT} status --porcelain --untracked-files=no") else ""),
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def load() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    others = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "name", "cpu_percent", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != me:
                proc.cpu_percent(None)
    time.sleep(1.0)
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            used = proc.cpu_percent(None)
            if used >= 10 and proc.pid != me:
                others.append(f"{proc.info['name']} ({used:.0f}%)")
    return {
        "uptime": sh("uptime"),
        "loadavg": [one, five, fifteen],
        "busy_processes": others[:10],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


#: The open-files limit the bench found, before raising it for itself and its
#: children (``bench/run.sh`` raises it first, and says what it found).
NOFILE_FOUND = (
    tuple(resource.RLIM_INFINITY if x == "unlimited" else int(x) for x in os.environ["BENCH_NOFILE_FOUND"].split(":"))
    if os.environ.get("BENCH_NOFILE_FOUND")
    else resource.getrlimit(resource.RLIMIT_NOFILE)
)


def raise_nofile() -> None:
    """Raise the soft open-files limit to the hard one (at least 65,536
    when the hard limit is unlimited): a 10,000-connection run needs a
    descriptor per connection in the server and in the clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@contextlib.contextmanager
def raised_limits(hosts: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Raise the soft open-files limit to the hard one, and the listen
    backlogs (``net.core.somaxconn``, ``tcp_max_syn_backlog``) while the
    bench runs; say what they were. The hard open-files limit of this
    machine's sandbox cannot be raised, even as root."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limits: dict[str, Any] = {"nofile_found": list(NOFILE_FOUND), "nofile": [hard, hard]}
    saved = {}
    for name, value in (("net.core.somaxconn", 65535), ("net.ipv4.tcp_max_syn_backlog", 65535)):
        path = Path("/proc/sys") / name.replace(".", "/")
        saved[path] = before = path.read_text().strip()
        with contextlib.suppress(OSError):
            if int(before) < value:
                path.write_text(str(value))
        limits[name] = [before, path.read_text().strip()]
    limits["ip_local_port_range"] = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    limits["listen_addresses"] = list(hosts)
    try:
        yield limits
    finally:
        for path, before in saved.items():
            with contextlib.suppress(OSError):
                path.write_text(before)


@contextlib.contextmanager
def private_redis(tmp: Path) -> Iterator[str]:
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = Proc(cmd, dict(os.environ), tmp / "redis.log", cwd=tmp)
    try:
        wait_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop(signal.SIGTERM)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_total(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += int(psutil.Process(pid).memory_info().rss)
    return total


def cpu_total(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += cpu_seconds(psutil.Process(pid))
    return total


def commandstats(client: redis.Redis[bytes]) -> dict[str, tuple[int, int]]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in stats.items()}


def redis_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], events: int) -> dict[str, Any]:
    """Redis calls and µs per event, in all and per command (INFO commandstats)."""
    per: dict[str, dict[str, float]] = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0:
            per[name] = {"calls": (calls - c0) / events, "usec": (usec - u0) / events}
    return {
        "calls_per_event": sum(v["calls"] for v in per.values()),
        "usec_per_event": sum(v["usec"] for v in per.values()),
        "commands": per,
    }
