"""The benchmark driver: ``python -m bench [--quick]``.

It starts every server, client and worker as its own process on this machine
and the one Redis, runs every measurement in one go, and writes
``bench/results/report.md``, ``results.json``, the PNG plots and
``docs/performance.rst``. See docs/performance.rst for what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis

from bench.common import (
    PY,
    ROOT,
    Proc,
    cpu_seconds,
    free_port,
    gunicorn,
    latency_sample,
    load,
    machine,
    pct,
    raise_nofile,
    rss,
    serving_pid,
    wait_port,
)

RESULTS = ROOT / "bench" / "results"


# -- plan -----------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    sizes: list[int]
    servers: list[str]
    #: Steady phase: events per second (at most; see :meth:`rate`) and seconds.
    steady_rate: float = 10.0
    steady_seconds: float = 30.0
    #: ... and at most this many deliveries per second, so that every N is
    #: measured below saturation.
    steady_deliveries: float = 10_000.0
    #: Offered phase: events per second offered, and for how long.
    offered_rate: float = 500.0
    offered_seconds: float = 2.0
    #: Idle-only runs (memory per connection): connections, and the servers.
    idle_sizes: list[int] = field(default_factory=lambda: [10_000])
    idle_servers: list[str] = field(default_factory=lambda: ["ours", "raw"])
    idle: float = 10.0
    client_procs: int = 2
    celery_rate: float = 20.0
    celery_seconds: float = 10.0
    celery_clients: int = 100
    send_seconds: float = 5.0
    #: Events per send_many() call.
    send_batch: int = 100
    flood_conns: int = 100
    flood_blobs: int = 50
    profile: bool = False
    #: Other copies of flask_notifications to serve side by side: label -> source root.
    variants: dict[str, str] = field(default_factory=dict)

    def rate(self, n: int) -> float:
        return min(self.steady_rate, self.steady_deliveries / n)

    def offered(self) -> int:
        return max(1, int(self.offered_rate * self.offered_seconds))


def make_plan(args: argparse.Namespace) -> Plan:
    servers = args.only.split(",") if args.only else ["ours", "raw", "rawc", "flasksse", "socketio"]
    for label, _ in args.variant:
        servers.insert(servers.index("ours") + 1 if "ours" in servers else 0, f"ours+{label}")
    if args.quick:
        plan = Plan(
            quick=True,
            sizes=args.sizes or [100, 1000],
            servers=servers,
            steady_rate=10,
            steady_seconds=2,
            offered_seconds=0.5,
            idle_sizes=[2000],
            idle=3,
            celery_rate=20,
            celery_seconds=2,
            celery_clients=20,
            send_seconds=1,
            flood_conns=20,
            flood_blobs=50,
        )
    else:
        plan = Plan(quick=False, sizes=args.sizes or [100, 1000], servers=servers)
    if args.idle_sizes is not None:
        plan.idle_sizes = args.idle_sizes
    plan.profile = args.profile
    if args.offered_rate is not None:
        plan.offered_rate = args.offered_rate
    plan.variants = dict(args.variant)
    plan.idle_servers = [s for s in plan.idle_servers if s in servers] + [s for s in servers if "+" in s]
    return plan


# -- the context of one run ----------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    redis_url: str
    prefix: str
    tmp: Path
    env: dict[str, str]
    client: redis.Redis[bytes]
    log: Callable[[str], None]
    out: Path
    template: tuple[str, str, str] = ("", "", "")
    events: int = 0
    publishers: dict[str, Callable[[str], None]] = field(default_factory=dict)

    def payload(self, seq: int | str) -> str:
        head, middle, tail = self.template
        return f"{head}{self.prefix}-{seq}{middle}{seq}:{time.time_ns()}{tail}"

    def redis_conns(self, pid: int) -> int:
        """Redis clients (``CLIENT LIST``) whose address is a socket of ``pid``."""
        port = redis.connection.parse_url(self.redis_url).get("port", 6379)
        local = {
            c.laddr.port
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        }
        return sum(1 for c in self.client.client_list() if int(c["addr"].rsplit(":", 1)[1]) in local)


def build_template(bench: Bench) -> None:
    from flask_notifications.event import Event

    body = "Benchmark body " * 8
    text = Event("@@ID@@", "bench", "Benchmark event", body, sender="bench", bench="@@B@@").to_json()
    head, _, rest = text.partition("@@ID@@")
    middle, _, tail = rest.partition("@@B@@")
    bench.template = (head, middle, tail)


# -- servers ----------------------------------------------------------------------------

NAMES = {
    "ours": "flask-notifications",
    "raw": "raw gevent, 1 write per frame",
    "rawc": "raw gevent, writes coalesced",
    "flasksse": "flask-sse 1.0.0",
    "socketio": "Flask-SocketIO",
}
#: The path a WebSocket client of Flask-SocketIO opens (Engine.IO 4).
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"


def name_of(kind: str) -> str:
    base, _, label = kind.partition("+")
    return NAMES[base] + (f" ({label})" if label else "")


def env_for(kind: str, bench: Bench) -> dict[str, str]:
    """The environment of a server: a variant imports its own copy of the library first."""
    _, _, label = kind.partition("+")
    if not label:
        return bench.env
    env = dict(bench.env)
    env["PYTHONPATH"] = bench.plan.variants[label] + os.pathsep + env["PYTHONPATH"]
    return env


def source_root(kind: str, bench: Bench) -> Path | str:
    """The working directory of a server: ``python -m`` puts it first on
    ``sys.path``, so a variant's root, else the repository."""
    label = kind.partition("+")[2]
    return bench.plan.variants[label] if label else ROOT


def server_command(kind: str, bench: Bench, port: int) -> tuple[list[str], str]:
    if kind.startswith("ours"):
        from bench import ours_app

        # The worker class of issue 19: live streams (direct writes).
        worker = "gevent" if "+" in kind else "flask_notifications.gunicorn.GeventWorker"
        return gunicorn("bench.ours_app:app", port, worker), f"/notifications/{ours_app.hubs[0].hub_id}/events"
    if kind == "flasksse":
        return gunicorn("bench.flasksse_app:app", port), f"/stream?channel={bench.prefix}-sse"
    if kind == "raw":
        return [PY, "-m", "bench.raw_server", str(port), bench.redis_url, f"{bench.prefix}-raw"], "/"
    if kind == "rawc":
        return [PY, "-m", "bench.raw_server", str(port), bench.redis_url, f"{bench.prefix}-rawc", "--coalesce"], "/"
    if kind == "socketio":
        worker = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
        return gunicorn("bench.socketio_app:app", port, worker), SOCKETIO_PATH
    raise ValueError(kind)


def publisher(kind: str, bench: Bench) -> Callable[[str], None]:
    """How each server's own documentation publishes one event."""
    kind = kind.partition("+")[0]
    if kind in bench.publishers:
        return bench.publishers[kind]
    if kind == "ours":
        from bench import ours_app

        backend = ours_app.notifications.get_backend(ours_app.app)
        hub_id = ours_app.hubs[0].hub_id

        def publish(data: str) -> None:
            backend.publish(hub_id, data)

    elif kind == "flasksse":
        from flask_sse import sse

        from bench import flasksse_app

        flasksse_app.app.app_context().push()
        channel = f"{bench.prefix}-sse"

        def publish(data: str) -> None:
            sse.publish(data, type="bench", channel=channel)

    elif kind in ("raw", "rawc"):
        client = redis.Redis.from_url(bench.redis_url)
        channel = f"{bench.prefix}-{kind}"

        def publish(data: str) -> None:
            client.publish(channel, data)

    elif kind == "socketio":
        from flask_socketio import SocketIO

        # An external process emits through the message queue, as
        # Flask-SocketIO's documentation shows; the event's fields go as a
        # dict, so the server encodes them once more as JSON.
        socketio = SocketIO(message_queue=bench.redis_url, channel=bench.env["BENCH_SOCKETIO_CHANNEL"])

        def publish(data: str) -> None:
            socketio.emit("bench", json.loads(data))

    else:
        raise ValueError(kind)
    bench.publishers[kind] = publish
    return publish


def warm_up(port: int, path: str, publish: Callable[[], None] | None, wait_for: bytes, timeout: float) -> None:
    """Open one stream, publish until ``wait_for`` arrives, close it."""
    ws = path == SOCKETIO_PATH
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if ws:
            from bench.client import ws_frame

            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            sock.sendall(ws_frame(b"40"))
        else:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        sock.settimeout(0.2)
        seen = b""
        deadline = time.monotonic() + timeout
        next_publish = 0.0
        while time.monotonic() < deadline:
            if publish is not None and time.monotonic() >= next_publish:
                publish()
                next_publish = time.monotonic() + 0.5
            with contextlib.suppress(TimeoutError):
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError(f"warm-up stream closed: {seen[:300]!r}")
                seen += data
            if not seen.startswith(b"HTTP/1.") and len(seen) > 12:
                raise RuntimeError(f"not HTTP: {seen[:200]!r}")
            status = seen.split(b"\r\n", 1)[0].split(b" ")[1] if b"\r\n" in seen else b""
            if seen and not status.startswith(b"101" if ws else b"200") and b"\r\n\r\n" in seen:
                raise RuntimeError(f"warm-up refused: {seen[:300]!r}")
            if wait_for in seen:
                return
        raise TimeoutError(f"warm-up saw no {wait_for!r} in {timeout}s: {seen[:300]!r}")


# -- clients ----------------------------------------------------------------------------


class Clients:
    """``total`` connections spread over the client processes."""

    def __init__(
        self,
        bench: Bench,
        tag: str,
        port: int,
        path: str,
        total: int,
        max_seq: int,
        procs: int,
        lazy: bool = False,
    ) -> None:
        self.bench = bench
        self.files: list[Path] = []
        self.procs: list[Proc] = []
        procs = max(1, min(procs, total))
        for index in range(procs):
            conns = total // procs + (1 if index < total % procs else 0)
            out = bench.tmp / f"{tag}-client{index}.npz"
            self.files.append(out)
            cmd = [
                PY,
                "-m",
                "bench.client",
                "--port",
                str(port),
                "--path",
                path,
                "--conns",
                str(conns),
                "--max-seq",
                str(max_seq),
                "--out",
                str(out),
                "--idle",
                str(bench.plan.idle),
            ]
            if lazy:
                cmd.append("--lazy-headers")
            if path == SOCKETIO_PATH:
                cmd.append("--ws")
            self.procs.append(Proc(cmd, bench.env, bench.tmp / f"{tag}-client{index}.log", lines=True))

    def ready(self, timeout: float) -> tuple[int, int]:
        ready = failed = 0
        for proc in self.procs:
            _, r, f = proc.expect("READY", timeout).split()
            ready, failed = ready + int(r), failed + int(f)
        return ready, failed

    def finish(self, expect: int, timeout: float) -> dict[str, np.ndarray]:
        for proc in self.procs:
            proc.write(f"EXPECT {expect}")
        for proc in self.procs:
            proc.expect("DONE", timeout)
        parts = [np.load(f) for f in self.files]
        # Arrays are joined, counts (dups, failed, ...) added up.
        return {
            key: np.concatenate([p[key] for p in parts]) if parts[0][key].ndim else np.array(sum(p[key] for p in parts))
            for key in parts[0].files
        }

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(signal.SIGKILL, 5)


# -- measurements ---------------------------------------------------------------------


def paced(publish: Callable[[str], None], bench: Bench, seqs: range, rate: float | None) -> float:
    """Publish ``seqs`` at ``rate`` per second (or as fast as possible); returns seconds taken."""
    start = time.perf_counter()
    for index, seq in enumerate(seqs):
        if rate:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        publish(bench.payload(seq))
    return time.perf_counter() - start


def start_serving(bench: Bench, kind: str, server: Proc, port: int, path: str, row: dict[str, Any]) -> int:
    """Wait for ``server``, warm it up with one stream, and record its memory
    and Redis connections with none: ``rss0`` and ``redis0`` in ``row``.

    :return: the pid of the process that serves the streams.
    """
    publish = publisher(kind, bench)
    wait_port(port, server)
    pid = serving_pid(server)
    warm_up(port, path, lambda: publish(bench.payload("warm")), b"warm", 30)
    time.sleep(1.0)
    row["rss0"] = rss(pid)
    row["redis0"] = bench.redis_conns(pid)
    return pid


def fanout(bench: Bench, kind: str, n: int) -> dict[str, Any]:
    plan = bench.plan
    rate = plan.rate(n)
    steady = max(1, int(rate * plan.steady_seconds))
    offered = plan.offered()
    total = steady + offered
    port = free_port()
    cmd, path = server_command(kind, bench, port)
    tag = f"{kind}-{n}"
    row: dict[str, Any] = {"server": kind, "name": name_of(kind), "clients": n, "steady_events": steady}
    row["steady_rate"] = rate
    row["offered_events"] = offered
    row["offered_rate"] = plan.offered_rate
    publish = publisher(kind, bench)
    server = Proc(cmd, env_for(kind, bench), bench.tmp / f"{tag}-server.log", cwd=source_root(kind, bench))
    clients: Clients | None = None
    profiler: Proc | None = None
    try:
        pid = start_serving(bench, kind, server, port, path, row)
        lazy = kind == "flasksse"
        clients = Clients(bench, tag, port, path, n, total, plan.client_procs if n > 100 else 1, lazy)
        ready, failed = clients.ready(timeout=60 + n / 20)
        row.update(ready=ready, failed=failed)
        if lazy:
            # No headers until the first event: wait until every stream holds its subscription.
            deadline = time.monotonic() + 60 + n / 20
            while bench.redis_conns(pid) < row["redis0"] + ready and time.monotonic() < deadline:
                time.sleep(0.5)
        time.sleep(2.0)
        row["rss_n"] = rss(pid)
        row["redis_n"] = bench.redis_conns(pid)
        row["kb_per_conn"] = (row["rss_n"] - row["rss0"]) / max(ready, 1) / 1024
        watched = [psutil.Process(pid)] + [psutil.Process(p.popen.pid) for p in clients.procs]
        before = [cpu_seconds(p) for p in watched]
        row["steady_publish_s"] = paced(publish, bench, range(steady), rate)
        time.sleep(1.5)
        steady_used = [cpu_seconds(p) - b for p, b in zip(watched, before, strict=True)]
        before = [cpu_seconds(p) for p in watched]
        if plan.profile and kind == "ours" and n == max(plan.sizes):
            # The offered phase only: the server at the most it delivers.
            offered_s = (total - steady) / plan.offered_rate
            profiler = start_profile(bench, pid, f"profile-{tag}", offered_s + 10)
        offered_start = time.time_ns()
        row["offered_publish_s"] = paced(publish, bench, range(steady, total), plan.offered_rate)
        data = clients.finish(total, timeout=600)
        used = [cpu_seconds(p) - b for p, b in zip(watched, before, strict=True)]
    except Exception as exc:  # noqa: BLE001 - a failed row is reported, the run goes on
        bench.log(f"  {tag} failed: {exc}")
        row["error"] = str(exc)[:500]
        return row
    finally:
        if profiler is not None:
            profiler.stop(signal.SIGINT, 20)
        if clients is not None:
            clients.stop()
        server.stop()
    seq, sent, recv = data["seq"], data["sent"], data["recv"]
    lat = (recv - sent) / 1e6
    is_steady = seq < steady
    row["steady"] = pct(lat[is_steady])
    row["offered"] = pct(lat[~is_steady])
    steady_n = int(is_steady.sum())
    if steady_n:
        # Server CPU per delivery at a rate every server keeps up with.
        row["steady_server_us_per_delivery"] = steady_used[0] / steady_n * 1e6
        row["steady_client_us_per_delivery"] = sum(steady_used[1:]) / steady_n * 1e6
    offered_n = int((~is_steady).sum())
    span = (recv[~is_steady].max() - sent[~is_steady].min()) / 1e9 if offered_n else 0
    if offered_n:
        # CPU per wall-clock second from the offered phase's start to its last delivery.
        window = (recv[~is_steady].max() - offered_start) / 1e9
        row["cpu_server"] = used[0] / window * 100
        row["cpu_clients"] = sum(used[1:]) / window * 100
        row["server_us_per_delivery"] = used[0] / offered_n * 1e6
        row["client_us_per_delivery"] = sum(used[1:]) / offered_n * 1e6
    row["deliveries"] = offered_n
    row["deliveries_per_s"] = offered_n / span if span else 0.0
    row["publish_per_s"] = offered / row["offered_publish_s"] if row["offered_publish_s"] else 0.0
    row["failed"] = int(data["failed"])
    row["ready"] = int(len(data["received"]))
    row["lost"] = int(row["ready"] * total - data["received"].sum())
    row["clients_with_loss"] = int((data["received"] < total).sum())
    row["max_lost_per_client"] = int(total - data["received"].min()) if len(data["received"]) else 0
    row["dups"] = int(data["dups"])
    row["cdf"] = latency_sample(lat[is_steady])
    if row["lost"] or row["failed"]:
        # What the server said about it (a worker timeout, say).
        row["server_log"] = server.tail()[-600:]
    bench.log(
        f"  {tag}: offered {row['deliveries_per_s']:,.0f} deliveries/s (p99 {row['offered']['p99'] or 0:.1f} ms), "
        f"steady p99 {row['steady']['p99'] or 0:.1f} ms at "
        f"{row.get('steady_server_us_per_delivery', 0):.1f} us/delivery, lost {row['lost']}, "
        f"{row['kb_per_conn']:.1f} KB/conn, redis {row['redis0']}->{row['redis_n']}"
    )
    return row


def idle_only(bench: Bench, kind: str, n: int) -> dict[str, Any]:
    """Memory per idle connection with ``n`` connections, nothing published."""
    plan = bench.plan
    port = free_port()
    cmd, path = server_command(kind, bench, port)
    tag = f"idle-{kind}-{n}"
    row: dict[str, Any] = {"server": kind, "name": name_of(kind), "clients": n}
    server = Proc(cmd, env_for(kind, bench), bench.tmp / f"{tag}-server.log", cwd=source_root(kind, bench))
    clients: Clients | None = None
    try:
        pid = start_serving(bench, kind, server, port, path, row)
        clients = Clients(bench, tag, port, path, n, 1, plan.client_procs)
        row["ready"], row["failed"] = clients.ready(timeout=120 + n / 20)
        time.sleep(2.0)
        row["rss_n"] = rss(pid)
        row["redis_n"] = bench.redis_conns(pid)
        row["open_files"] = psutil.Process(pid).num_fds()
        row["kb_per_conn"] = (row["rss_n"] - row["rss0"]) / max(row["ready"], 1) / 1024
    except Exception as exc:  # noqa: BLE001
        bench.log(f"  {tag} failed: {exc}")
        row["error"] = str(exc)[:500]
        return row
    finally:
        if clients is not None:
            clients.stop()
        server.stop()
    bench.log(
        f"  {tag}: {row['ready']:,} of {n:,} connected, {row['kb_per_conn']:.1f} KB/conn, "
        f"{row['open_files']:,} open files in the server"
    )
    return row


def start_profile(bench: Bench, pid: int, name: str, seconds: float) -> Proc | None:
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        bench.log("  py-spy not installed; no profile")
        return None
    out = bench.out / f"{name}.txt"
    cmd = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--format",
        "raw",
        "--duration",
        str(int(seconds)),
        "-o",
        str(out),
    ]
    return Proc(cmd, bench.env, bench.tmp / f"{name}.log")


def client_rate(bench: Bench) -> dict[str, Any]:
    """The client's own ceiling: pre-built frames as fast as a server can write them."""
    plan = bench.plan
    per_blob = 200
    frame_file = bench.tmp / "frame.txt"
    head, middle, tail = bench.template
    frame = f"id: 1-0\nevent: bench\ndata: {head}flood{middle}@@SEQ@@:{time.time_ns()}{tail}\n\n"
    frame_file.write_text(frame)
    port = free_port()
    server = Proc(
        [PY, "-m", "bench.flood_server", str(port), str(frame_file), str(per_blob), str(plan.flood_blobs)],
        bench.env,
        bench.tmp / "flood-server.log",
    )
    procs = []
    try:
        wait_port(port, server)
        conns = plan.flood_conns // plan.client_procs
        for index in range(plan.client_procs):
            out = bench.tmp / f"flood-client{index}.npz"
            cmd = [PY, "-m", "bench.client", "--port", str(port), "--path", "/", "--conns", str(conns)]
            cmd += ["--max-seq", str(per_blob), "--out", str(out), "--flood"]
            procs.append((Proc(cmd, bench.env, bench.tmp / f"flood-client{index}.log", lines=True), out))
        for proc, _ in procs:
            proc.expect("DONE", 300)
        parts = [np.load(out) for _, out in procs]
    finally:
        for proc, _ in procs:
            proc.stop(signal.SIGKILL, 5)
        server.stop()
    recv = np.concatenate([p["recv"] for p in parts])
    span = (recv.max() - recv.min()) / 1e9
    rate = len(recv) / span if span else 0.0
    expected = plan.client_procs * conns * per_blob * plan.flood_blobs
    bench.log(f"  client ceiling: {rate:,.0f} frames/s ({len(recv):,} of {expected:,} frames)")
    return {"frames": int(len(recv)), "expected": expected, "seconds": span, "per_s": rate, "procs": plan.client_procs}


def full_path(bench: Bench) -> dict[str, Any]:
    """send() -> Celery worker (gevent pool) -> PushConsumer -> Redis -> SSE -> client."""
    from bench import ours_app
    from flask_notifications.event import Event

    plan = bench.plan
    count = int(plan.celery_rate * plan.celery_seconds)
    port = free_port()
    cmd, path = server_command("ours", bench, port)
    server = Proc(cmd, bench.env, bench.tmp / "celery-server.log")
    worker_cmd = [PY, "-m", "celery", "-A", "bench.ours_app:celery", "worker", "-P", "gevent", "-c", "100"]
    worker_cmd += ["-Q", ours_app.QUEUE, "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "WARNING"]
    worker = Proc(worker_cmd, bench.env, bench.tmp / "celery-worker.log")
    clients: Clients | None = None
    row: dict[str, Any] = {"rate": plan.celery_rate, "events": count, "clients": plan.celery_clients}
    app, notifications = ours_app.app, ours_app.notifications
    body = "Benchmark body " * 8

    def send(seq: int | str) -> None:
        stamp = f"{seq}:{time.time_ns()}"
        notifications.send(Event(None, "bench", "Benchmark event", body, sender="bench", bench=stamp))

    try:
        with app.app_context():
            wait_port(port, server)
            warm_up(port, path, lambda: send("warm"), b"warm", 60)
            clients = Clients(bench, "celery", port, path, plan.celery_clients, count, 1)
            row["ready"], row["failed"] = clients.ready(60)
            time.sleep(1.0)
            start = time.perf_counter()
            for seq in range(count):
                delay = start + seq / plan.celery_rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                send(seq)
        data = clients.finish(count, timeout=300)
    except Exception as exc:  # noqa: BLE001
        bench.log(f"  full path failed: {exc}")
        row["error"] = str(exc)[:500]
        return row
    finally:
        if clients is not None:
            clients.stop()
        worker.stop(signal.SIGTERM, 15)
        server.stop()
    lat = (data["recv"] - data["sent"]) / 1e6
    row["latency"] = pct(lat)
    row["ready"] = int(len(data["received"]))
    row["lost"] = int(row["ready"] * count - data["received"].sum())
    row["dups"] = int(data["dups"])
    row["cdf"] = latency_sample(lat)
    bench.log(f"  full path: p50 {row['latency']['p50'] or 0:.1f} ms, p99 {row['latency']['p99'] or 0:.1f} ms")
    return row


def send_throughput(bench: Bench, hubs: int, batch: int = 0) -> dict[str, Any]:
    """Events per second one process hands to Celery with ``send()``, or
    with ``send_many()`` in batches of ``batch``; nothing consumes them."""
    from bench import ours_app
    from flask_notifications.event import Event

    queue_name = f"{bench.prefix}-sendq-{hubs}-{batch}"
    app, notifications, _ = ours_app.make_app(hubs=hubs, queue=queue_name)
    body = "Benchmark body " * 8

    def send() -> int:
        if batch:
            notifications.send_many(
                [Event(None, "bench", "Benchmark event", body, sender="bench") for _ in range(batch)]
            )
            return batch
        notifications.send(Event(None, "bench", "Benchmark event", body, sender="bench"))
        return 1

    with app.app_context():
        for _ in range(20):
            send()
        sent = 0
        start = time.perf_counter()
        deadline = start + bench.plan.send_seconds
        while time.perf_counter() < deadline:
            sent += send()
        elapsed = time.perf_counter() - start
    queued = bench.client.llen(queue_name)
    bench.client.delete(queue_name)
    notifications.get_backend(app).close()
    rate = sent / elapsed
    how = f"send_many() of {batch}" if batch else "send()"
    bench.log(f"  {how} with {hubs} hub(s): {rate:,.0f} events/s ({queued} messages queued)")
    return {"hubs": hubs, "batch": batch, "sent": sent, "seconds": elapsed, "per_s": rate, "queued": int(queued)}


@contextlib.contextmanager
def isolated_env(redis_url: str, prefix: str) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env.update(
        BENCH_REDIS_URL=redis_url,
        BENCH_PREFIX=prefix,
        BENCH_QUEUE=f"{prefix}-queue",
        BENCH_SOCKETIO_CHANNEL=f"{prefix}-socketio",
    )
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    saved = {k: os.environ.get(k) for k in ("BENCH_REDIS_URL", "BENCH_PREFIX", "BENCH_QUEUE")}
    os.environ.update({k: env[k] for k in saved})
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str] | None = None) -> int:
    from bench import per_user

    if per_user.wanted(sys.argv[1:] if argv is None else argv):
        return per_user.main(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of under two minutes")
    parser.add_argument(
        "--only",
        help="comma-separated servers (ours,flasksse,raw), or the scale scenarios of bench.per_user "
        "(per-user,many-streams,nchan,many-hubs: see python -m bench --only per-user --help)",
    )
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="client counts, e.g. 100,1000")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: client,fanout,idle,celery,send")
    parser.add_argument(
        "--idle-sizes", type=lambda s: [int(x) for x in s.split(",")], help="connections of the idle-only runs"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy our largest run's offered phase")
    parser.add_argument(
        "--offered-rate",
        type=float,
        help="events/s of the offered phase (default 500); far above what a server delivers, it measures the max rate",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=lambda s: tuple(s.split("=", 1)),
        metavar="LABEL=PATH",
        help="also serve the flask_notifications found under PATH (a patched copy), as 'flask-notifications + LABEL'",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", type=Path, help="default: bench/results, or bench/results/quick with --quick")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.rst")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / "quick" if args.quick else RESULTS
    # A smoke run never replaces the published figures.
    write_docs = not args.no_docs and not args.quick
    plan = make_plan(args)
    skip = set(filter(None, args.skip.split(",")))
    raise_nofile()
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = f"fn-bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    client: redis.Redis[bytes] = redis.Redis.from_url(args.redis_url)
    client.ping()
    started = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results: dict[str, Any] = {"command": command.strip(), "plan": plan.__dict__, "prefix": prefix}
    ok = False
    with isolated_env(args.redis_url, prefix) as env:
        bench = Bench(plan, args.redis_url, prefix, tmp, env, client, log, args.out)
        try:
            build_template(bench)
            results["date"] = datetime.now(UTC).isoformat(timespec="seconds")
            results["machine"] = machine(bench.client)
            results["load_before"] = load()
            log(f"load before: {results['load_before']['uptime']}")
            if "client" not in skip:
                log("client ceiling")
                results["client"] = client_rate(bench)
            results["fanout"] = []
            if "fanout" not in skip:
                for n in plan.sizes:
                    for kind in plan.servers:
                        log(f"fan-out: {name_of(kind)}, {n} clients")
                        results["fanout"].append(fanout(bench, kind, n))
            results["idle"] = []
            if "idle" not in skip:
                for n in plan.idle_sizes:
                    for kind in plan.idle_servers:
                        log(f"idle: {name_of(kind)}, {n:,} connections")
                        results["idle"].append(idle_only(bench, kind, n))
            if "celery" not in skip and "ours" in plan.servers:
                log("full path through Celery")
                results["celery"] = full_path(bench)
            if "send" not in skip and "ours" in plan.servers:
                log("send() throughput")
                results["send"] = [
                    send_throughput(bench, 1),
                    send_throughput(bench, 10),
                    send_throughput(bench, 1, plan.send_batch),
                    send_throughput(bench, 10, plan.send_batch),
                ]
            results["load_after"] = load()
            log(f"load after: {results['load_after']['uptime']}")
            results["seconds"] = time.monotonic() - started
            ok = True
        finally:
            cleanup(client, prefix)
            if ok:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                log(f"logs kept in {tmp}")
    from bench import report

    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    report.write(results, args.out, ROOT / "docs" / "performance.rst" if write_docs else None)
    log(f"wrote {args.out / 'report.md'}")
    return 0


def cleanup(client: redis.Redis[bytes], prefix: str) -> None:
    for pattern in (f"{prefix}*", f"_kombu.binding.{prefix}*", f"*{prefix}*"):
        keys = list(client.scan_iter(pattern, count=1000))
        if keys:
            client.delete(*keys)
