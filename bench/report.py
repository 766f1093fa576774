"""Turn ``results.json`` into ``report.md``, the PNG plots and docs/performance.rst.

``python -m bench.report [results.json]`` re-renders without re-measuring.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FINDINGS = Path(__file__).resolve().parent / "findings.md"
ORDER = ["ours", "flasksse", "raw"]
COLORS = {"ours": "tab:blue", "flasksse": "tab:red", "raw": "tab:green"}
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

- **Servers.** flask-notifications and flask-sse 1.0.0 each run under ``gunicorn -k gevent -w 1``, a
  single process. The "raw" peer is about 60 lines of gevent (``bench/raw_server.py``). It holds
  one Redis subscription and writes each frame, encoded once, to every socket. It shows what the
  hardware allows.
- **Client.** ``bench/client.py`` runs {procs} processes (one for 100 clients), each with one
  ``epoll`` loop over its sockets. Each payload carries its sequence number and its send time
  (``time.time_ns()``). The client finds these with one regular expression per ``recv()`` and
  records the receive time of each delivery. Its own ceiling is measured against
  ``bench/flood_server.py``, which writes pre-built frames as fast as it can. The table also
  gives the CPU time that the server and the clients spend per delivery in the burst. On a
  shared machine, this figure is disturbed less than a rate is.
- **Fan-out.** A fresh server is started for each client count N. The run then has two phases.
  The *steady* phase publishes for {steady_seconds:g} s at {steady_rate:g} events/s, or at
  {steady_deliveries:,.0f} deliveries/s if that is fewer events (10/s at 100 clients, 5/s at 1,000,
  1/s at 5,000), so that every N is measured below saturation. The latency figures come from
  this phase. The *burst* phase publishes about {burst_deliveries:,} deliveries' worth of
  events as fast as the publisher can, and deliveries/s is burst deliveries divided by the time
  from the first send to the last receive. Each peer publishes the way its documentation shows:
  ``backend.publish()`` (what ``PushConsumer`` calls), ``sse.publish()``, and ``PUBLISH`` for the
  raw peer. Loss is counted by sequence number for each client.
- **Idle cost.** (RSS of the serving process with N idle streams − RSS after warm-up with none) / N.
  The Redis connections of the serving process are counted by matching ``CLIENT LIST`` against
  its sockets.
- **Full path.** ``notifications.send()`` → Celery worker (``-P gevent -c 100``) → ``PushConsumer``
  → Redis → SSE → client, at {celery_rate:g} events/s for {celery_seconds:g} s with
  {celery_clients} clients.
- **send().** How many events one process hands to Celery per second. Nothing consumes them.
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
        "Deliveries/s",
        "Steady p50 / p95 / p99 / max (ms)",
        "Burst p50 / p99 (ms)",
        "Lost",
        "Idle KB/conn",
        "Redis conns (0 → N)",
        "CPU % server / clients (burst)",
        "CPU µs per delivery, server / clients",
    ]
    body = []
    ordered = sorted(results.get("fanout", []), key=lambda r: (r["clients"], rank(r["server"])))
    for r in ordered:
        if "error" in r:
            body.append([r["name"], fmt(r["clients"]), "failed: " + r["error"][:120], "", "", "", "", "", "", ""])
            continue
        s, b = r["steady"], r["burst"]
        connected = fmt(r["clients"]) if not r.get("failed") else f"{r['ready']:,} of {r['clients']:,}"
        lost = fmt(r["lost"])
        if r["lost"]:
            lost += f" ({r['clients_with_loss']} clients)"
        body.append(
            [
                r["name"],
                connected,
                fmt(r["deliveries_per_s"]),
                " / ".join(fmt(s[k]) for k in ("p50", "p95", "p99", "max")),
                " / ".join(fmt(b[k]) for k in ("p50", "p99")),
                lost,
                fmt(r["kb_per_conn"]),
                f"{r['redis0']} → {r['redis_n']}",
                f"{fmt(r.get('cpu_server'), 0)} / {fmt(r.get('cpu_clients'), 0)}",
                f"{fmt(r.get('server_us_per_delivery'))} / {fmt(r.get('client_us_per_delivery'))}",
            ]
        )
    return head, body


def targets(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = rows_by(results)
    head = ["Target", "Measured", "Result"]
    body: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("met" if ok else "**missed**")

    def get(kind: str, n: int, key: str) -> Any:
        row = rows.get((kind, n))
        return None if row is None or "error" in row else row.get(key)

    n = 1000 if any(k[1] == 1000 for k in rows) else max((k[1] for k in rows), default=0)
    ours, fsse, raw = (get(k, n, "deliveries_per_s") for k in ORDER)
    ratio = ours / fsse if ours and fsse else None
    body.append(
        [
            f"Deliveries/s at {n:,} clients ≥ 5 × flask-sse",
            f"{fmt(ours)} vs {fmt(fsse)}: {fmt(ratio, 2)} ×",
            verdict(None if ratio is None else ratio >= 5),
        ]
    )
    ratio = ours / raw if ours and raw else None
    body.append(
        [
            f"Deliveries/s at {n:,} clients ≥ 0.5 × raw",
            f"{fmt(ours)} vs {fmt(raw)}: {fmt(ratio, 2)} ×",
            verdict(None if ratio is None else ratio >= 0.5),
        ]
    )
    mem = {k: get(k, n, "kb_per_conn") for k in ORDER}
    body.append(
        [
            "Idle memory ≤ 30 KB per connection",
            f"{fmt(mem['ours'])} KB at {n:,}",
            verdict(None if mem["ours"] is None else mem["ours"] <= 30),
        ]
    )
    ratio = mem["ours"] / mem["flasksse"] if mem["ours"] is not None and mem["flasksse"] else None
    body.append(
        [
            "Idle memory ≤ 0.5 × flask-sse",
            f"{fmt(mem['ours'])} vs {fmt(mem['flasksse'])} KB: {fmt(ratio, 2)} ×",
            verdict(None if ratio is None else ratio <= 0.5),
        ]
    )
    conns = {k[1]: (r["redis0"], r["redis_n"]) for k, r in rows.items() if k[0] == "ours" and "error" not in r}
    body.append(
        [
            "Redis connections constant in N",
            ", ".join(f"N={k:,}: {v[1]}" for k, v in sorted(conns.items())) or "–",
            verdict(None if not conns else len({v[1] for v in conns.values()}) == 1),
        ]
    )
    p99 = (get("ours", n, "steady") or {}).get("p99")
    body.append(
        [
            f"p99 ≤ 50 ms at {n:,} clients, direct",
            f"{fmt(p99)} ms",
            verdict(None if p99 is None else p99 <= 50),
        ]
    )
    celery = results.get("celery") or {}
    cp99 = (celery.get("latency") or {}).get("p99")
    body.append(["p99 ≤ 150 ms through Celery", f"{fmt(cp99)} ms", verdict(None if cp99 is None else cp99 <= 150)])
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
    sends = results.get("send")
    if sends:
        body = [[str(s["hubs"]), fmt(s["per_s"]), fmt(s["sent"])] for s in sends]
        out.append(("send() throughput, one process", ["Matching hubs", "Events/s", "Events sent"], body))
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
        f"Python {m.get('python', '?')}, open files limit {m.get('nofile', '?')}",
        "versions": versions,
        "commit": m.get("commit", "?"),
        "command": results.get("command", "python -m bench"),
        "before": loads(before),
        "after": loads(after),
        "duration": f"{results.get('seconds', 0):.0f} s",
    }


class _Figures(dict[str, str]):
    """Figures of this run for ``findings.md``: ``{ours_1000_deliveries_per_s}``,
    ``{ours+before fix_1000_kb_per_conn}``, ``{ours_1000_steady_p99}`` ... A
    figure the run lacks reads as ``–``."""

    def __init__(self, results: dict[str, Any]) -> None:
        super().__init__()
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


def render(results: dict[str, Any], flavour: str, images: str) -> str:
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
            steady_deliveries=plan.get("steady_deliveries", 5000),
            burst_deliveries=plan.get("burst_deliveries", 0),
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
    ax.set_xlabel("concurrent SSE clients (N)")
    ax.set_ylabel("deliveries per second (burst)")
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
client, the memory of an idle stream, the delay of the whole path from ``send()`` through a
Celery worker, and how fast ``send()`` hands events to Celery. flask-sse and a minimal gevent
server run in the same benchmark, on the same machine, for comparison.

To run it again, use ``pip install -e . -r bench/requirements.txt`` and then ``bench/run.sh``. It
takes about ten minutes, and ``--quick`` makes a smoke run. The run writes
``bench/results/report.md``, the plots and this page; do not edit the page by hand.

"""


#: The inbox benchmark (``python -m bench.inbox``) writes its own section.
INBOX_INCLUDE = "\n.. include:: ../bench/results/inbox.rst\n"


def write(results: dict[str, Any], out: Path, docs: Path | None) -> None:
    plots(results, out)
    (out / "report.md").write_text(render(results, "md", "") + "\n")
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(out.resolve(), docs.parent.resolve())
        docs.write_text(RST_HEAD + render(results, "rst", f"{Path(rel).as_posix()}/") + "\n" + INBOX_INCLUDE)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results" / "results.json"
    write(json.loads(path.read_text()), path.parent, ROOT / "docs" / "performance.rst")
