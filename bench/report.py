"""Turn ``results.json`` into ``report.md``, the PNG plots and docs/performance.rst.

``python -m bench.report [results.json]`` re-renders without re-measuring.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FINDINGS = Path(__file__).resolve().parent / "findings.md"
ORDER = ["ours", "raw", "rawc", "flasksse", "socketio"]
COLORS = {"ours": "tab:blue", "raw": "tab:green", "rawc": "tab:olive", "flasksse": "tab:red", "socketio": "tab:cyan"}
VARIANT_COLORS = ["tab:purple", "tab:orange", "tab:brown"]


def rank(kind: str) -> tuple[int, str]:
    """Order of the servers in tables: ours, its variants, flask-sse, raw."""
    base, _, label = kind.partition("+")
    return (ORDER.index(base) * 2 + (1 if label else 0), label)


def color(kind: str, kinds: list[str]) -> str:
    if kind in COLORS:
        return COLORS[kind]
    variants = sorted(k for k in kinds if "+" in k)
    return VARIANT_COLORS[variants.index(kind) % len(VARIANT_COLORS)]


METHOD = """\
Every figure below comes from one run of ``{command}`` on one machine. The servers, the client
processes, the publisher, the Celery worker and Redis all share it, and every server is measured
with the same client against the same Redis.

- **Servers.** Each runs in a single process. flask-notifications and flask-sse 1.0.0 run under
  ``gunicorn -k gevent -w 1``. Flask-SocketIO runs under gunicorn with its WebSocket worker
  (``-k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 1``) with ``message_queue`` on
  the same Redis, as its documentation shows for more than one process. The two "raw" peers are
  about 100 lines of gevent (``bench/raw_server.py``) with one Redis subscription, each frame
  encoded once: one writes each frame to every socket as it arrives (one ``send()`` per frame and
  socket), the other (``--coalesce``) joins every message Redis already delivered and writes
  them to each socket at once. In both, a socket whose buffer is full gets a greenlet that
  writes the rest. They show what the hardware allows.
- **Client.** ``bench/client.py`` runs {procs} processes (one for 100 clients), each with one
  ``epoll`` loop over its sockets. Each payload carries its sequence number and its send time
  (``time.time_ns()``). The client finds these with one regular expression per ``recv()`` and
  records the receive time of each delivery. For Flask-SocketIO it speaks Engine.IO 4 over
  WebSocket itself: it upgrades, joins the default namespace and answers pings. Its own ceiling
  is measured against ``bench/flood_server.py``, which writes pre-built frames as fast as it can.
- **Fan-out.** A fresh server is started for each client count N. The run then has two phases.
  The *steady* phase publishes for {steady_seconds:g} s at {steady_rate:g} events/s, or at
  {steady_deliveries:,.0f} deliveries/s if that is fewer events, so that every N is measured
  below saturation. The steady latency and the server's CPU time per delivery come from this
  phase. The *offered* phase then publishes {offered_rate:g} events/s for {offered_seconds:g} s;
  its deliveries/s is its deliveries divided by the time from its first send to its last
  receive. Each peer publishes the way its documentation shows: ``backend.publish()`` (what
  ``PushConsumer`` calls), ``sse.publish()``, ``SocketIO(message_queue=...).emit()`` from
  another process, and ``PUBLISH`` for the raw peers. Loss is counted by sequence number for
  each client.
- **Idle cost.** (RSS of the serving process with N idle streams − RSS after warm-up with none) / N.
  The idle-only runs open N connections and publish nothing. The Redis connections of the
  serving process are counted by matching ``CLIENT LIST`` against its sockets.
- **Full path.** ``notifications.send()`` → Celery worker (``-P gevent -c 100``) → ``PushConsumer``
  → Redis → SSE → client, at {celery_rate:g} events/s for {celery_seconds:g} s with
  {celery_clients} clients.
- **send() and send_many().** How many events one process hands to Celery per second, building
  each event in the loop. Nothing consumes them.
"""


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def rows_by(results: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["server"], r["clients"]): r for r in results.get("fanout", [])}


def fanout_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [
        "Server",
        "Clients",
        "Steady p50 / p95 / p99 / max (ms)",
        "Steady CPU µs per delivery, server / clients",
        "Offered: deliveries/s",
        "Offered p50 / p99 (ms)",
        "Lost",
        "Idle KB/conn",
        "Redis conns (0 → N)",
        "CPU % server / clients (offered)",
    ]
    body = []
    ordered = sorted(results.get("fanout", []), key=lambda r: (r["clients"], rank(r["server"])))
    for r in ordered:
        if "error" in r:
            body.append([r["name"], fmt(r["clients"]), "failed: " + r["error"][:120], "", "", "", "", "", "", ""])
            continue
        s, o = r["steady"], r["offered"]
        connected = fmt(r["clients"]) if not r.get("failed") else f"{r['ready']:,} of {r['clients']:,}"
        lost = fmt(r["lost"])
        if r["lost"]:
            lost += f" ({r['clients_with_loss']} clients)"
        body.append(
            [
                r["name"],
                connected,
                " / ".join(fmt(s[k]) for k in ("p50", "p95", "p99", "max")),
                f"{fmt(r.get('steady_server_us_per_delivery'))} / {fmt(r.get('steady_client_us_per_delivery'))}",
                fmt(r["deliveries_per_s"]),
                " / ".join(fmt(o[k]) for k in ("p50", "p99")),
                lost,
                fmt(r["kb_per_conn"]),
                f"{r['redis0']} → {r['redis_n']}",
                cpu_share(r),
            ]
        )
    return head, body


def cpu_share(row: dict[str, Any]) -> str:
    """CPU % of the server and the clients in the offered phase; a server
    whose worker was replaced meanwhile has no figure."""
    server = row.get("cpu_server")
    shown = "– (worker replaced)" if server is not None and server < 0 else fmt(server, 0)
    return f"{shown} / {fmt(row.get('cpu_clients'), 0)}"


def side_by_side(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The figures of the issue's table, one column per server, at 1,000 clients."""
    rows = rows_by(results)
    n = 1000 if any(k[1] == 1000 for k in rows) else max((k[1] for k in rows), default=0)
    kinds = [k for k in ORDER if (k, n) in rows]
    idle = {(r["server"], r["clients"]): r for r in results.get("idle", []) if "error" not in r}
    head = ["Figure", *(rows[(k, n)]["name"] for k in kinds)]

    def cell(kind: str, getter: Callable[[dict[str, Any]], Any]) -> str:
        row = rows[(kind, n)]
        if "error" in row:
            return "failed"
        return getter(row)

    body = [
        [
            f"steady {results.get('plan', {}).get('steady_rate', 10):g} events/s: p50 / p99 ms",
            *(cell(k, lambda r: f"{fmt(r['steady']['p50'])} / {fmt(r['steady']['p99'])}") for k in kinds),
        ],
        [
            "server CPU µs per delivery, steady",
            *(cell(k, lambda r: fmt(r.get("steady_server_us_per_delivery"))) for k in kinds),
        ],
        [
            f"offered {results.get('plan', {}).get('offered_rate', 500):g} events/s: deliveries/s",
            *(cell(k, lambda r: fmt(r["deliveries_per_s"])) for k in kinds),
        ],
        ["offered: p99 ms", *(cell(k, lambda r: fmt(r["offered"]["p99"])) for k in kinds)],
        ["lost", *(cell(k, lambda r: fmt(r["lost"])) for k in kinds)],
        [f"KB per idle connection at {n:,}", *(cell(k, lambda r: fmt(r["kb_per_conn"])) for k in kinds)],
    ]
    for size in sorted({c for _, c in idle}):
        body.append(
            [
                f"KB per idle connection at {size:,}",
                *(fmt(idle[(k, size)]["kb_per_conn"]) if (k, size) in idle else "–" for k in kinds),
            ]
        )
    body.append(["Redis connections at N", *(cell(k, lambda r: fmt(r["redis_n"])) for k in kinds)])
    return head, body


#: The targets of issue 14 that compare a measure of ours at N clients with
#: the same measure of a peer: the text, the keys of the measure, the peer,
#: the unit, the bound on the ratio, and whether it is an upper bound.
_PEER_TARGETS: list[tuple[str, tuple[str, ...], str, str, float, bool]] = [
    ("Steady at {n:,} clients: p99 ≤ 1.3 × raw (1 write per frame)", ("steady", "p99"), "raw", "ms", 1.3, True),
    (
        "Steady at {n:,} clients: server CPU per delivery ≤ 2 × raw (1 write per frame)",
        ("steady_server_us_per_delivery",),
        "raw",
        "µs",
        2.0,
        True,
    ),
    (
        "Offered at {n:,} clients: deliveries/s ≥ 0.8 × raw (coalesced)",
        ("deliveries_per_s",),
        "rawc",
        "per s",
        0.8,
        False,
    ),
    ("Offered at {n:,} clients: p99 ≤ 2 × raw (coalesced)", ("offered", "p99"), "rawc", "ms", 2.0, True),
]


def targets(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The targets of issue 14, as ratios to the named peer in this run."""
    rows = rows_by(results)
    head = ["Target", "Measured", "Result"]
    body: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("met" if ok else "**missed**")

    def get(kind: str, n: int, *keys: str) -> Any:
        value: Any = rows.get((kind, n))
        if value is None or "error" in value:
            return None
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def ratio_row(text: str, ours: Any, peer: Any, unit: str, bound: float, at_most: bool) -> None:
        ratio = ours / peer if ours is not None and peer else None
        ok = None if ratio is None else (ratio <= bound if at_most else ratio >= bound)
        body.append([text, f"{fmt(ours)} vs {fmt(peer)} {unit}: {fmt(ratio, 2)} ×", verdict(ok)])

    n = 1000 if any(k[1] == 1000 for k in rows) else max((k[1] for k in rows), default=0)
    for text, keys, peer, unit, bound, at_most in _PEER_TARGETS:
        ratio_row(text.format(n=n), get("ours", n, *keys), get(peer, n, *keys), unit, bound, at_most)
    idle = [
        (r["clients"], r["kb_per_conn"]) for r in results.get("idle", []) if r["server"] == "ours" and "error" not in r
    ]
    sizes = [(n, get("ours", n, "kb_per_conn")), *idle]
    measured = [(c, kb) for c, kb in sizes if kb is not None]
    body.append(
        [
            "≤ 12 KB per idle connection at 1,000 and at 10,000",
            ", ".join(f"{kb:.1f} KB at {c:,}" for c, kb in measured) or "–",
            verdict(None if not measured else all(kb <= 12 for _, kb in measured)),
        ]
    )
    sends = {(s["hubs"], s.get("batch", 0)): s["per_s"] for s in results.get("send", [])}
    many = next((v for (h, b), v in sends.items() if h == 1 and b), None)
    ratio_row("send_many() ≥ 10 × send(), one hub", many, sends.get((1, 0)), "events/s", 10.0, False)
    celery = results.get("celery") or {}
    cp99 = (celery.get("latency") or {}).get("p99")
    body.append(
        [
            "Full path send() → Celery → SSE: p99 ≤ 100 ms",
            f"{fmt(cp99)} ms",
            verdict(None if cp99 is None else cp99 <= 100),
        ]
    )
    lost = [r["lost"] for k, r in rows.items() if k[0] == "ours" and "error" not in r]
    if "lost" in celery:
        lost.append(celery["lost"])
    body.append(
        [
            "Zero loss (flask-notifications, every run)",
            f"{sum(lost):,} deliveries lost" if lost else "–",
            verdict(None if not lost else sum(lost) == 0),
        ]
    )
    conns = {k[1]: r["redis_n"] for k, r in rows.items() if k[0] == "ours" and "error" not in r}
    conns.update(
        {r["clients"]: r["redis_n"] for r in results.get("idle", []) if r["server"] == "ours" and "error" not in r}
    )
    body.append(
        [
            "Redis connections of the server constant in N (one of them the subscription)",
            ", ".join(f"N={k:,}: {v}" for k, v in sorted(conns.items())) or "–",
            verdict(None if not conns else len(set(conns.values())) == 1),
        ]
    )
    return head, body


def other_tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    c = results.get("celery")
    if c:
        if "error" in c:
            body = [["failed: " + c["error"][:200], "", "", ""]]
        else:
            lat = c["latency"]
            body = [
                [
                    f"{c['rate']:g} events/s × {c['events'] / c['rate']:g} s, {c['clients']} clients",
                    " / ".join(fmt(lat[k]) for k in ("p50", "p95", "p99", "max")),
                    fmt(c["lost"]),
                    fmt(c["dups"]),
                ]
            ]
        out.append(
            (
                "Full path: send() → Celery → PushConsumer → SSE",
                ["Load", "p50 / p95 / p99 / max (ms)", "Lost", "Duplicates"],
                body,
            )
        )
    idle = results.get("idle")
    if idle:
        body = [
            [r["name"], fmt(r["clients"]), "failed: " + r["error"][:120], "", ""]
            if "error" in r
            else [r["name"], fmt(r["clients"]), fmt(r["ready"]), fmt(r["kb_per_conn"]), fmt(r["open_files"])]
            for r in idle
        ]
        out.append(
            (
                "Idle connections only, one server process",
                ["Server", "Connections", "Connected", "KB/conn", "Open files in the server"],
                body,
            )
        )
    sends = results.get("send")
    if sends:
        body = [
            [
                f"send_many() of {s['batch']}" if s.get("batch") else "send()",
                str(s["hubs"]),
                fmt(s["per_s"]),
                fmt(s["sent"]),
            ]
            for s in sends
        ]
        out.append(
            (
                "send() and send_many() throughput, one process",
                ["Call", "Matching hubs", "Events/s", "Events sent"],
                body,
            )
        )
    cl = results.get("client")
    if cl:
        body = [[str(cl["procs"]), fmt(cl["per_s"]), f"{cl['frames']:,} of {cl['expected']:,}"]]
        out.append(
            ("The client's own ceiling (pre-built frames)", ["Client processes", "Frames parsed/s", "Frames"], body)
        )
    return out


# -- rendering ---------------------------------------------------------------------------------


def md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def rst_table(head: list[str], body: list[list[str]]) -> str:
    def cell(text: str) -> str:
        text = text.replace("**", "")
        return text if text.strip() else "\\"

    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [head, *body]:
        lines.append("   * - " + cell(row[0]))
        lines += ["     - " + cell(c) for c in row[1:]]
    return "\n".join(lines)


def nofile(machine: dict[str, Any]) -> str:
    """The open-files limit the run had, and the one it found."""
    soft, hard = machine.get("nofile_found") or ["?", "?"]
    now = machine.get("nofile", "?")
    if now == soft:
        return f"open files limit {now} (as found; the hard limit is {hard})"
    return f"open files limit {now} (raised by the bench from {soft}; the hard limit is {hard})"


def context(results: dict[str, Any]) -> dict[str, str]:
    m = results.get("machine", {})
    before, after = results.get("load_before", {}), results.get("load_after", {})

    def loads(entry: dict[str, Any]) -> str:
        if not entry:
            return "–"
        la = ", ".join(f"{x:.2f}" for x in entry["loadavg"])
        busy = ", ".join(entry.get("busy_processes") or []) or "none"
        return f"load average {la} (at {entry['at']}); processes above 10 % CPU: {busy}"

    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    mem = next((line.split()[1] for line in m.get("free", "").splitlines() if line.startswith("Mem:")), "?")
    return {
        "date": results.get("date", "?"),
        "machine": f"{m.get('nproc', '?')} cores ({m.get('cpu', '?')}), {mem} memory, Linux {m.get('kernel', '?')}, "
        f"Python {m.get('python', '?')}, {nofile(m)}",
        "versions": versions,
        "commit": m.get("commit", "?"),
        "command": results.get("command", "python -m bench"),
        "before": loads(before),
        "after": loads(after),
        "duration": f"{results.get('seconds', 0):.0f} s",
    }


class _Figures(dict[str, str]):
    """Figures of this run for ``findings.md``: ``{ours_1000_deliveries_per_s}``,
    ``{ours_1000_steady_p99}``, ``{idle_ours_10000_kb_per_conn}``,
    ``{send_1_100_per_s}``, ``{celery_p99}`` ... A figure the run lacks reads as ``–``."""

    def __init__(self, results: dict[str, Any]) -> None:
        super().__init__()
        for row in results.get("idle", []):
            if "error" not in row:
                self[f"idle_{row['server']}_{row['clients']}_kb_per_conn"] = fmt(row["kb_per_conn"])
        for row in results.get("send", []):
            self[f"send_{row['hubs']}_{row.get('batch', 0)}_per_s"] = fmt(row["per_s"])
        celery = results.get("celery") or {}
        for key, value in (celery.get("latency") or {}).items():
            self[f"celery_{key}"] = fmt(value)
        for row in results.get("fanout", []):
            if "error" in row:
                continue
            for key, value in row.items():
                if isinstance(value, (int, float)):
                    self[f"{row['server']}_{row['clients']}_{key}"] = fmt(value)
                elif isinstance(value, dict):
                    for sub, number in value.items():
                        self[f"{row['server']}_{row['clients']}_{key}_{sub}"] = fmt(number)

    def __missing__(self, key: str) -> str:
        return "–"


def render(results: dict[str, Any], flavour: str, images: str, out_dir: Path = ROOT / "bench" / "results") -> str:
    table: Callable[[list[str], list[list[str]]], str] = md_table if flavour == "md" else rst_table
    ctx = context(results)
    plan = results.get("plan", {})
    out: list[str] = []

    def heading(text: str, char: str) -> None:
        if flavour == "md":
            out.append(("#" if char == "=" else "##") + " " + text)
        else:
            out.append(text)
            out.append(char * len(text))
        out.append("")

    if flavour == "md":
        heading("Benchmark results", "=")
    quick = " (a ``--quick`` smoke run: small sizes and short phases)" if plan.get("quick") else ""
    out.append(f"- **Date:** {ctx['date']}{quick}")
    out.append(f"- **Machine:** {ctx['machine']}")
    out.append(f"- **Software:** flask-notifications {ctx['commit']}, {ctx['versions']}")
    out.append(f"- **Command:** ``{ctx['command']}`` ({ctx['duration']})")
    out.append(f"- **Load before:** {ctx['before']}")
    out.append(f"- **Load after:** {ctx['after']}")
    out.append("")
    heading("Targets", "-")
    out.append(table(*targets(results)))
    out.append("")
    heading("Side by side at 1,000 clients", "-")
    out.append(table(*side_by_side(results)))
    out.append("")
    heading("Fan-out: one server process, N streams", "-")
    out.append(table(*fanout_table(results)))
    out.append("")
    for title, head, body in other_tables(results):
        heading(title, "-")
        out.append(table(head, body))
        out.append("")
    heading("Plots", "-")
    for name, alt in (("latency_cdf.png", "Latency CDF"), ("deliveries.png", "Deliveries per second against N")):
        if flavour == "md":
            out.append(f"![{alt}]({images}{name})")
        else:
            out.append(f".. image:: {images}{name}\n   :alt: {alt}\n   :width: 100%")
        out.append("")
    if flavour == "md" and (SCALE := out_dir / "per-user" / "report.md").exists():
        out.append(re.sub(r"^(#+) ", r"#\1 ", SCALE.read_text(), flags=re.MULTILINE))  # one level down
    if FINDINGS.exists():
        heading("Findings", "-")
        out.append(FINDINGS.read_text().strip().format_map(_Figures(results)))
        out.append("")
    heading("Method", "-")
    out.append(
        METHOD.format(
            command=ctx["command"],
            procs=plan.get("client_procs", 2),
            steady_rate=plan.get("steady_rate", 0),
            steady_seconds=plan.get("steady_seconds", 0),
            steady_deliveries=plan.get("steady_deliveries", 10_000),
            offered_rate=plan.get("offered_rate", 0),
            offered_seconds=plan.get("offered_seconds", 0),
            celery_rate=plan.get("celery_rate", 0),
            celery_seconds=plan.get("celery_seconds", 0),
            celery_clients=plan.get("celery_clients", 0),
        )
    )
    return "\n".join(out)


def plots(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.get("fanout", []) if "error" not in r]
    sizes = sorted({r["clients"] for r in rows})
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(8, 5))
    kinds = sorted({r["server"] for r in rows}, key=rank)
    for r in sorted(rows, key=lambda r: (rank(r["server"]), r["clients"])):
        cdf = r.get("cdf") or []
        if not cdf:
            continue
        ys = [(i + 1) / len(cdf) for i in range(len(cdf))]
        ax.plot(
            cdf,
            ys,
            styles[sizes.index(r["clients"]) % len(styles)],
            color=color(r["server"], kinds),
            label=f"{r['name']}, {r['clients']:,} clients",
        )
    celery = results.get("celery") or {}
    if celery.get("cdf"):
        cdf = celery["cdf"]
        ys = [(i + 1) / len(cdf) for i in range(len(cdf))]
        ax.plot(cdf, ys, "-", color="black", label=f"flask-notifications through Celery, {celery['clients']} clients")
    ax.set_xscale("log")
    ax.set_xlabel("send → receive latency, steady phase (ms, log scale)")
    ax.set_ylabel("fraction of deliveries")
    ax.axhline(0.99, color="grey", lw=0.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Latency CDF")
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    for kind in kinds:
        mine = sorted((r for r in rows if r["server"] == kind), key=lambda r: r["clients"])
        if mine:
            ax.plot(
                [r["clients"] for r in mine],
                [r["deliveries_per_s"] for r in mine],
                "o-",
                color=color(kind, kinds),
                label=mine[0]["name"],
            )
    client = results.get("client")
    if client:
        ax.axhline(client["per_s"], color="grey", ls="--", label="client ceiling")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients (N)")
    ax.set_ylabel("deliveries per second (offered phase)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Deliveries per second against N, one server process")
    fig.tight_layout()
    fig.savefig(out / "deliveries.png", dpi=110)
    plt.close(fig)


RST_HEAD = """\
Performance
===========

This page reports what one process of Flask-Notifications sustains. It covers how many SSE
deliveries per second one gunicorn gevent worker makes, the delay from publishing to the
client, the memory of an idle stream (up to 10,000 of them in one process), the delay of the
whole path from ``send()`` through a Celery worker, and how fast ``send()`` and
``send_many()`` hand events to Celery. flask-sse, Flask-SocketIO and two minimal gevent servers
run in the same benchmark, on the same machine, for comparison.

To run it again, use ``pip install -e . -r bench/requirements.txt`` and then ``bench/run.sh``. It
takes about ten minutes, and ``--quick`` makes a smoke run. The run writes
``bench/results/report.md``, the plots and this page; do not edit the page by hand.

"""


#: The inbox benchmark (``python -m bench.inbox``) writes its own section.
INBOX_INCLUDE = "\n.. include:: ../bench/results/inbox.rst\n"
#: The per-user scenarios (issue 20), kept by hand beside their runs.
PER_USER_INCLUDE = "\n.. include:: ../bench/results/per-user.rst\n"


def write(results: dict[str, Any], out: Path, docs: Path | None) -> None:
    plots(results, out)
    (out / "report.md").write_text(render(results, "md", "", out) + "\n")
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(out.resolve(), docs.parent.resolve())
        docs.write_text(
            RST_HEAD + render(results, "rst", f"{Path(rel).as_posix()}/") + "\n" + INBOX_INCLUDE + PER_USER_INCLUDE
        )


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results" / "results.json"
    write(json.loads(path.read_text()), path.parent, ROOT / "docs" / "performance.rst")
