"""The scale benchmarks of issue 20: what users run.

``python -m bench --only per-user,many-streams,nchan,many-hubs`` (any of them)
runs them; ``--sizes`` sets the N of the per-user runs. The raw results go to
``bench/results/per-user/results.json`` and ``report.md``
(:mod:`bench.per_user_report`), and ``bench/results/report.md`` includes them.

- **per-user**: one ``gunicorn -k gevent -w 1`` serving :mod:`bench.per_user_app`;
  N streams, each of its own user (the ``bench_user`` cookie, an authorizer
  returning ``WithRecipient(user)``); each event goes to one random user and is
  published straight to the backend (``backend.publish``, what
  ``PushConsumer`` calls), at a fixed rate.
- **many-streams**: the same with several gunicorn workers, each with its
  own backend reader, and N up to 50,000; then a broadcast phase on the same
  server (streams without a user read the hub unfiltered).
- **nchan**: nginx with nchan, one worker per core, each subscriber on the
  channel of its user, published through nchan's publisher endpoint; the same
  N, rate and client.
- **many-hubs**: H hubs with 5 streams each; each event goes to one random
  hub. The reader's CPU per event and Redis's ``INFO commandstats`` per event.

Every run starts its own Redis (``redis-server --save ''``) on a free port.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import shlex
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis

import bench.run as run_clients
from bench.client import users_of
from bench.common import (
    PY,
    ROOT,
    Proc,
    commandstats,
    cpu_total,
    free_port,
    gunicorn,
    latency_sample,
    load,
    loadavg,
    machine,
    pct,
    private_redis,
    raised_limits,
    redis_delta,
    rss_total,
    serving_pids,
    sh,
    wait_port,
)

OUT = ROOT / "bench" / "results" / "per-user"
SCENARIOS = ("per-user", "many-streams", "nchan", "many-hubs")
#: The stream of every per-user run: one hub, a filter per stream.
HUB_ID = "event-hub-bench"
#: Connections per client process: below the open-files limit of one process,
#: and few enough for one epoll loop to keep up at 1 event/s.
CONNS_PER_CLIENT = 6_000
#: Listen addresses: past about 28,000 connections to one address and port,
#: this machine's ephemeral ports (32768-60999) run out.
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")


@dataclass
class Plan:
    scenarios: list[str]
    sizes: list[int] = field(default_factory=lambda: [1000, 3000, 10000])
    #: Events per second (in total) and seconds of the measured phase.
    rate: float = 1.0
    seconds: float = 30.0
    many_sizes: list[int] = field(default_factory=lambda: [10000, 25000, 50000])
    many_workers: int = 4
    broadcast_events: int = 20
    broadcast_rate: float = 200.0
    #: (hubs, streams per hub). A run of more than 15,000 streams takes one gunicorn worker per
    #: 15,000 (each below the hard open-files limit here, 20,000), each following every hub.
    hubs: list[tuple[int, int]] = field(default_factory=lambda: [(100, 5), (1000, 5), (3000, 5), (10000, 1)])
    hubs_rate: float = 20.0
    #: gunicorn's ``-k`` for our server: ``gevent``, or the package's worker class, whose
    #: streams the fan-out writes itself (``flask_notifications.gunicorn.GeventWorker``).
    worker: str = "gevent"
    hubs_seconds: float = 15.0
    idle: float = 20.0
    #: Seconds the CPU of the open streams is measured without events, before each measured phase.
    idle_cpu: float = 10.0


@dataclass
class Ctx:
    plan: Plan
    tmp: Path
    env: dict[str, str]
    redis_url: str
    client: redis.Redis[bytes]
    log: Callable[[str], None]
    template: tuple[str, str, str, str] = ("", "", "", "")


# -- servers -------------------------------------------------------------------------


NGINX_CONF = """\
worker_processes {workers};
worker_rlimit_nofile {nofile};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
events {{ worker_connections 65536; use epoll; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  nchan_shared_memory_size 512M;
  server {{
    {listen}
    location ~ ^/sub/(\\w+)$ {{ nchan_subscriber eventsource; nchan_channel_id $1; }}
    location ~ ^/pub/(\\w+)$ {{
      nchan_publisher; nchan_channel_id $1;
      nchan_message_buffer_length 1000; nchan_message_timeout 120s;
    }}
  }}
}}
"""


@dataclass
class Server:
    """A server under test: its process, port, worker pids, stream path and publisher."""

    kind: str
    proc: Proc
    port: int
    workers: int
    #: The path a user's stream opens (``{user}`` is its number) and the
    #: headers it sends.
    path: str
    headers: list[str]
    broadcast_path: str
    #: ``publish(user, data)``: to ``user``'s channel (or hub), or to every stream with ``None``.
    publish: Callable[[int | None, str], None]
    pids: list[int] = field(default_factory=list)
    #: The many-hubs run: each "user" is a hub of its own.
    hub_per_user: bool = False

    def stop(self) -> None:
        self.proc.stop(signal.SIGINT, 15)


def start_ours(ctx: Ctx, workers: int, hubs: int = 0) -> Server:
    port = free_port()
    env = dict(ctx.env, BENCH_HUBS=str(hubs))
    cmd = gunicorn("bench.per_user_app:app", port, worker=ctx.plan.worker, workers=workers, hosts=HOSTS)
    cmd[cmd.index("20000")] = "60000"  # --worker-connections: the many-hubs run holds 50,000 in one
    proc = Proc(cmd, env, ctx.tmp / f"ours-w{workers}-h{hubs}-{port}.log")
    from bench import ours_app

    backend = ours_app.notifications.get_backend(ours_app.app)

    def publish(user: int | None, data: str) -> None:
        backend.publish(f"event-hub-h{user}" if server.hub_per_user and user is not None else HUB_ID, data)

    path = f"/notifications/{HUB_ID}/events"
    server = Server("ours", proc, port, workers, path, ["Cookie: bench_user=u{user}"], path, publish)
    server.pids = started(server, lambda: publish(None, ctx_payload(ctx, "warm")), ctx, timeout=60 + hubs / 100)
    return server


def start_nchan(ctx: Ctx, workers: int) -> Server:
    port = free_port()
    conf = ctx.tmp / f"nginx-{port}.conf"
    # reuseport: the kernel spreads the connections over the workers, each below its open-files limit.
    listen = " ".join(f"listen {host}:{port} backlog=65535 reuseport;" for host in HOSTS)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    conf.write_text(NGINX_CONF.format(workers=workers, tmp=ctx.tmp, listen=listen, nofile=nofile))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = Proc([nginx, "-c", str(conf), "-p", str(ctx.tmp)], ctx.env, ctx.tmp / f"nginx-{port}.log")
    conn: list[http.client.HTTPConnection] = []

    def publish(user: int | None, data: str) -> None:
        if not conn:
            conn.append(http.client.HTTPConnection("127.0.0.1", port, timeout=120))
        conn[0].request("POST", f"/pub/{'all' if user is None else user}", body=data.encode())
        response = conn[0].getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"nchan refused a publish: {response.status}")

    server = Server("nchan", proc, port, workers, "/sub/{user}", [], "/sub/all", publish)
    server.pids = started(server, lambda: publish(None, ctx_payload(ctx, "warm")), ctx, timeout=30)
    return server


def started(server: Server, warm: Callable[[], None], ctx: Ctx, timeout: float) -> list[int]:
    """Wait for ``server``; open one stream on each worker's reader (a few tries) until the warm-up event arrives."""
    wait_port(server.port, server.proc, timeout)
    pids = serving_pids(server.proc, server.workers)
    for _ in range(server.workers * 2):
        run_clients.warm_up(server.port, server.broadcast_path, warm, b"warm", timeout)
    return pids


# -- payloads and clients -------------------------------------------------------------


def build_template(ctx: Ctx) -> None:
    from flask_notifications.event import Event

    body = "Benchmark body " * 8
    text = Event("@@I@@", "bench", "Benchmark event", body, sender="bench", recipients=["@@U@@"], bench="@@B@@")
    head, _, rest = text.to_json().partition("@@I@@")
    middle, _, rest = rest.partition("@@U@@")
    middle2, _, tail = rest.partition("@@B@@")
    ctx.template = (head, middle, middle2, tail)


def ctx_payload(ctx: Ctx, seq: int | str, user: int | None = None) -> str:
    """An event for ``user`` (``u<user>``, in ``recipients`` and in the client's marker), or for no one."""
    head, middle, middle2, tail = ctx.template
    stamp = f"{seq}:{time.time_ns()}" + ("" if user is None else f":u{user}")
    recipient = "" if user is None else f"u{user}"
    return f"{head}{seq}{middle}{recipient}{middle2}{stamp}{tail}"


class Clients(run_clients.Clients):
    """``total`` connections over ``ceil(total / CONNS_PER_CLIENT)`` client processes, each
    connection a user's stream (or, with ``users=0``, a broadcast stream)."""

    def __init__(self, ctx: Ctx, server: Server, tag: str, total: int, max_seq: int, users: int, group: int) -> None:
        self.procs: list[Proc] = []
        self.files: list[Path] = []
        procs = max(1, math.ceil(total / CONNS_PER_CLIENT))
        first = 0
        for index in range(procs):
            conns = total // procs + (1 if index < total % procs else 0)
            out = ctx.tmp / f"{tag}-client{index}.npz"
            cmd = [PY, "-m", "bench.client", "--host", ",".join(HOSTS), "--port", str(server.port)]
            cmd += ["--conns", str(conns), "--max-seq", str(max_seq), "--out", str(out), "--idle", str(ctx.plan.idle)]
            if users:
                cmd += ["--path", server.path, "--first", str(first), "--group", str(group)]
                cmd += ["--users", str(users), "--seed", "20"]
                for header in server.headers:
                    cmd += ["--header", header]
            else:
                cmd += ["--path", server.broadcast_path]
            first += conns
            self.files.append(out)
            self.procs.append(Proc(cmd, ctx.env, ctx.tmp / f"{tag}-client{index}.log", lines=True))


# -- measurements -------------------------------------------------------------------------


def run_users(
    ctx: Ctx, server: Server, tag: str, n: int, rate: float, seconds: float, group: int = 1
) -> dict[str, Any]:
    """``n`` streams of ``n // group`` users; ``rate * seconds`` events, each to one random user."""
    users = math.ceil(n / group)
    events = max(1, int(rate * seconds))
    row: dict[str, Any] = {"server": server.kind, "workers": server.workers, "streams": n, "users": users}
    row.update(rate=rate, events=events, load_start=loadavg(), at=datetime.now(UTC).isoformat(timespec="seconds"))
    row["rss0"] = rss_total(server.pids)
    clients = Clients(ctx, server, tag, n, events, users, group)
    try:
        row["ready"], row["failed"] = clients.ready(timeout=120 + n / 50)
        time.sleep(2.0)
        row["kb_per_conn"] = (rss_total(server.pids) - row["rss0"]) / max(row["ready"], 1) / 1024
        row["worker_fds"] = [psutil.Process(pid).num_fds() for pid in server.pids]
        if row["failed"]:
            # Why the server refused them (a 503 says so in a warning).
            row["server_log"] = server.proc.tail()[-800:]
        recipients = users_of(20, users, events)
        # What the open streams cost without events (heartbeats, timers), a second.
        idle0, idle_start = cpu_total(server.pids), time.perf_counter()
        time.sleep(ctx.plan.idle_cpu)
        row["idle_cpu_ms_per_s"] = (cpu_total(server.pids) - idle0) / (time.perf_counter() - idle_start) * 1e3
        cpu0, stats0 = cpu_total(server.pids), commandstats(ctx.client)
        start = time.perf_counter()
        for seq in range(events):
            delay = start + seq / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            user = int(recipients[seq])
            server.publish(user, ctx_payload(ctx, seq, user))
        row["publish_s"] = time.perf_counter() - start
        data = clients.finish(events, timeout=max(600, 3 * seconds))
        row["cpu_s"] = cpu_total(server.pids) - cpu0
        row["measured_s"] = time.perf_counter() - start
        row["redis"] = redis_delta(stats0, commandstats(ctx.client), events)
    finally:
        clients.stop()
    lat = (data["recv"] - data["sent"]) / 1e6
    per_user = np.bincount(recipients, minlength=users)
    # Each user's events go to its ``group`` streams, except those that failed to connect.
    expected = events * group - sum(int(per_user[u]) for u in data["failed_users"])
    row["latency"] = pct(lat)
    row["deliveries"] = int(data["received"].sum())
    row["expected"] = expected
    row["lost"] = expected - row["deliveries"]
    row["wrong_user"] = int(data["wrong"])
    row["dups"] = int(data["dups"])
    row["cpu_ms_per_event"] = row["cpu_s"] / events * 1e3
    row["cpu_us_per_stream"] = row["cpu_s"] / events / max(row["ready"], 1) * 1e6
    # Less what the same seconds cost without events: the cost of the events themselves.
    idle_s = row["idle_cpu_ms_per_s"] / 1e3 * row["measured_s"]
    row["net_cpu_ms_per_event"] = (row["cpu_s"] - idle_s) / events * 1e3
    row["drain_s"] = float((data["recv"].max() - data["sent"].min()) / 1e9 - row["publish_s"]) if len(lat) else None
    row["cdf"] = latency_sample(lat, 300)
    row["load_end"] = loadavg()
    ctx.log(
        f"  {tag}: {row['ready']:,}/{n:,} streams, {row['cpu_ms_per_event']:.1f} ms CPU/event "
        f"({row['cpu_us_per_stream']:.1f} us/stream), p50/p99 {row['latency']['p50'] or 0:.1f}/"
        f"{row['latency']['p99'] or 0:.1f} ms, lost {row['lost']}, wrong {row['wrong_user']}, "
        f"{row['kb_per_conn']:.1f} KB/conn, idle {row['idle_cpu_ms_per_s']:.1f} ms CPU/s, "
        f"net {row['net_cpu_ms_per_event']:.1f} ms/event, load {row['load_start']}"
    )
    return row


def run_broadcast(ctx: Ctx, server: Server, tag: str, n: int) -> dict[str, Any]:
    """``n`` unfiltered streams; ``broadcast_events`` events at ``broadcast_rate``: deliveries/s."""
    plan = ctx.plan
    events = plan.broadcast_events
    row: dict[str, Any] = {"server": server.kind, "workers": server.workers, "streams": n, "events": events}
    row.update(rate=plan.broadcast_rate, load_start=loadavg())
    clients = Clients(ctx, server, tag, n, events, 0, 1)
    try:
        row["ready"], row["failed"] = clients.ready(timeout=120 + n / 50)
        time.sleep(2.0)
        cpu0 = cpu_total(server.pids)
        start = time.perf_counter()
        for seq in range(events):
            delay = start + seq / plan.broadcast_rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            server.publish(None, ctx_payload(ctx, seq))
        data = clients.finish(events, timeout=600)
        row["cpu_s"] = cpu_total(server.pids) - cpu0
    finally:
        clients.stop()
    lat = (data["recv"] - data["sent"]) / 1e6
    row["deliveries"] = int(data["received"].sum())
    row["lost"] = row["ready"] * events - row["deliveries"]
    span = (data["recv"].max() - data["sent"].min()) / 1e9 if len(lat) else 0
    row["deliveries_per_s"] = row["deliveries"] / span if span else 0.0
    row["latency"] = pct(lat)
    row["us_per_delivery"] = row["cpu_s"] / max(row["deliveries"], 1) * 1e6
    row["load_end"] = loadavg()
    ctx.log(
        f"  {tag}: {row['deliveries_per_s']:,.0f} deliveries/s, p99 {row['latency']['p99'] or 0:.0f} ms, "
        f"lost {row['lost']}, load {row['load_start']}"
    )
    return row


def measured(
    ctx: Ctx, tag: str, start: Callable[[], Server], body: Callable[[Server], dict[str, Any]]
) -> dict[str, Any]:
    """Start a server, run ``body`` on it, stop it; a failure is reported in the row and the bench goes on."""
    server: Server | None = None
    try:
        server = start()
        return body(server)
    except Exception as exc:  # noqa: BLE001
        ctx.log(f"  {tag} failed: {exc}")
        return {"error": str(exc)[:600], "load_start": loadavg()}
    finally:
        if server is not None:
            server.stop()


def starter(ctx: Ctx, kind: str, workers: int, hubs: int = 0) -> Callable[[], Server]:
    def start() -> Server:
        if kind == "nchan":
            return start_nchan(ctx, workers)
        server = start_ours(ctx, workers, hubs)
        if hubs:
            server.path, server.headers, server.hub_per_user = "/notifications/event-hub-h{user}/events", [], True
        return server

    return start


# -- scenarios ------------------------------------------------------------------------------


def per_user(ctx: Ctx, kind: str, workers: int, sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        tag = f"{kind}-w{workers}-{n}"
        ctx.log(f"per-user: {kind}, {workers} worker(s), {n:,} streams")
        row = measured(
            ctx,
            tag,
            starter(ctx, kind, workers),
            lambda s, n=n, t=tag: run_users(ctx, s, t, n, ctx.plan.rate, ctx.plan.seconds),
        )
        rows.append({"server": kind, "workers": workers, "streams": n, **row})
    return rows


def many_streams(ctx: Ctx, kind: str) -> list[dict[str, Any]]:
    """Per-user streams, then as many broadcast streams, on one server of several workers."""
    rows = []
    for n in ctx.plan.many_sizes:
        # One nginx worker per core, unless that puts more than 15,000 streams in one process:
        # the hard open-files limit is 20,000 per process here.
        workers = ctx.plan.many_workers if kind == "ours" else max(os.cpu_count() or 2, math.ceil(n / 15_000))
        tag = f"many-{kind}-w{workers}-{n}"
        ctx.log(f"many streams: {kind}, {workers} workers, {n:,} streams")

        def body(server: Server, n: int = n, tag: str = tag) -> dict[str, Any]:
            row = run_users(ctx, server, tag, n, ctx.plan.rate, ctx.plan.seconds)
            try:
                row["broadcast"] = run_broadcast(ctx, server, tag + "-bc", n)
            except Exception as exc:  # noqa: BLE001
                ctx.log(f"  {tag}-bc failed: {exc}")
                row["broadcast"] = {"error": str(exc)[:600]}
            return row

        rows.append(
            {"server": kind, "workers": workers, "streams": n, **measured(ctx, tag, starter(ctx, kind, workers), body)}
        )
        if "error" in rows[-1]:
            break
    return rows


def many_hubs(ctx: Ctx) -> list[dict[str, Any]]:
    rows = []
    for hubs, per_hub in ctx.plan.hubs:
        n = hubs * per_hub
        tag = f"hubs-{hubs}x{per_hub}"
        workers = max(1, math.ceil(n / 15_000))
        ctx.log(f"many hubs: {hubs:,} hubs of {per_hub} streams, {workers} worker(s)")

        def body(server: Server, n: int = n, tag: str = tag, per_hub: int = per_hub) -> dict[str, Any]:
            return run_users(ctx, server, tag, n, ctx.plan.hubs_rate, ctx.plan.hubs_seconds, per_hub)

        row = measured(ctx, tag, starter(ctx, "ours", workers, hubs), body)
        rows.append({"server": "ours", "workers": workers, "streams": n, "hubs": hubs, "per_hub": per_hub, **row})
        if "error" in rows[-1]:
            break
    return rows


# -- driver ---------------------------------------------------------------------------------


def run(plan: Plan, out: Path = OUT, command: str = "") -> dict[str, Any]:
    """Run ``plan``'s scenarios, write ``out/results.json`` and ``out/report.md``."""
    started = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    prefix = f"fn-scale-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    results: dict[str, Any] = {"command": command, "plan": asdict(plan)}
    ok = False
    with raised_limits(HOSTS) as limits, private_redis(tmp) as redis_url:
        results["limits"] = limits
        env = dict(os.environ, BENCH_REDIS_URL=redis_url, BENCH_PREFIX=prefix, BENCH_QUEUE=f"{prefix}-queue")
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_PREFIX", "BENCH_QUEUE")})
        client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
        ctx = Ctx(plan, tmp, env, redis_url, client, log)
        try:
            build_template(ctx)
            results["date"] = datetime.now(UTC).isoformat(timespec="seconds")
            results["machine"] = machine(client)
            results["nginx"] = sh("nginx -v 2>&1; dpkg-query -W libnginx-mod-nchan")
            results["load_before"] = load()
            log(f"load before: {results['load_before']['uptime']}; limits {limits}")
            if "per-user" in plan.scenarios:
                results["per_user"] = per_user(ctx, "ours", 1, plan.sizes)
            if "nchan" in plan.scenarios:
                results["nchan"] = per_user(ctx, "nchan", os.cpu_count() or 2, plan.sizes)
            if "many-streams" in plan.scenarios:
                results["many_streams"] = many_streams(ctx, "ours")
                if "nchan" in plan.scenarios:
                    results["many_streams_nchan"] = many_streams(ctx, "nchan")
            if "many-hubs" in plan.scenarios:
                results["many_hubs"] = many_hubs(ctx)
            results["load_after"] = load()
            log(f"load after: {results['load_after']['uptime']}")
            results["seconds"] = time.monotonic() - started
            ok = True
        finally:
            if ok:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                log(f"logs kept in {tmp}")
    from bench import per_user_report

    (out / "results.json").write_text(json.dumps(results, indent=1))
    per_user_report.write(results, out)
    log(f"wrote {out / 'report.md'}")
    main_results = out.parent / "results.json"
    if out.name == "per-user" and main_results.exists():
        # bench/results/report.md includes this report: render it again, without measuring.
        from bench import report

        report.write(json.loads(main_results.read_text()), out.parent, None)
    return results


def wanted(argv: list[str]) -> bool:
    """Whether ``python -m bench`` was asked for these scenarios (``--only per-user,...``)."""
    only = argparse.ArgumentParser(add_help=False)
    only.add_argument("--only", default="")
    names = set(filter(None, only.parse_known_args(argv)[0].only.split(",")))
    return bool(names) and names <= set(SCENARIOS)


def main(argv: list[str]) -> int:
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(prog="python -m bench --only " + ",".join(SCENARIOS), description=__doc__)
    parser.add_argument("--only", required=True, type=lambda s: s.split(","))
    parser.add_argument("--quick", action="store_true", help="a smoke run: small N, short phases")
    parser.add_argument("--sizes", type=ints, help="streams of the per-user and nchan runs (1000,3000,10000)")
    parser.add_argument("--many-sizes", type=ints, help="streams of the many-streams runs (10000,25000,50000)")
    parser.add_argument("--many-workers", type=int, help="gunicorn workers of the many-streams runs (4)")
    parser.add_argument("--hubs", help="the many-hubs runs, hubs x streams per hub (100x5,1000x5,3000x5,10000x1)")
    parser.add_argument("--rate", type=float, help="events per second in all, per-user runs (1)")
    parser.add_argument("--seconds", type=float, help="seconds of publishing, per-user runs (30)")
    parser.add_argument("--worker", help="gunicorn -k of ours: gevent, or flask_notifications.gunicorn.GeventWorker")
    parser.add_argument("--idle-cpu", type=float, help="seconds the idle CPU is measured before each phase (10)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    plan = Plan(scenarios=args.only)
    if args.quick:
        plan.sizes, plan.seconds, plan.hubs_seconds, plan.idle, plan.idle_cpu = [200, 500], 5, 3, 5, 3
        plan.many_sizes, plan.many_workers, plan.hubs = [2000], 2, [(20, 5), (100, 5)]
    for name in ("sizes", "many_sizes", "many_workers", "rate", "seconds", "worker", "idle_cpu"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    if args.hubs:
        plan.hubs = [(int(h), int(k)) for h, _, k in (part.partition("x") for part in args.hubs.split(","))]
    run(plan, args.out, "python -m bench " + " ".join(shlex.quote(a) for a in argv))
    return 0
