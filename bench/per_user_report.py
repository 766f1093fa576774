"""Turn ``bench/results/per-user/results.json`` into its ``report.md``, and
the section that ``bench/results/report.md`` includes.

``python -m bench.per_user_report [results.json]`` re-renders without re-measuring.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.report import context, fmt, md_table

OUT = Path(__file__).resolve().parent / "results" / "per-user"
NAMES = {"ours": "flask-notifications", "nchan": "nchan (nginx)"}


def _load(row: dict[str, Any]) -> str:
    start, end = row.get("load_start"), row.get("load_end")
    text = " ".join(f"{x:.1f}" for x in start) if start else "–"
    return f"{text} → {end[0]:.1f}" if end else text


def _lat(row: dict[str, Any]) -> str:
    lat = row.get("latency") or {}
    return f"{fmt(lat.get('p50'))} / {fmt(lat.get('p99'))}"


def _streams(row: dict[str, Any]) -> str:
    n = row["streams"]
    if row.get("ready") is not None and row["ready"] != n:
        return f"{row['ready']:,} of {n:,}"
    return fmt(n)


def _error(row: dict[str, Any], width: int) -> list[str]:
    return [NAMES[row["server"]], fmt(row["streams"]), "failed: " + row["error"][:160]] + [""] * (width - 3)


def per_user_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = [
        "Server (workers)",
        "Streams (= users)",
        "Events at /s",
        "Server CPU per event (ms)",
        "less the idle CPU (ms)",
        "idle CPU (ms/s)",
        "per stream (µs)",
        "p50 / p99 (ms)",
        "Lost",
        "To another user",
        "KB/conn",
        "Drain after last publish (s)",
        "Load avg (1, 5, 15 min → 1 min at end)",
    ]
    body = []
    for r in rows:
        if "error" in r:
            body.append(_error(r, len(head)))
            continue
        body.append(
            [
                f"{NAMES[r['server']]} ({r['workers']})",
                _streams(r),
                f"{r['events']} at {fmt(r['rate'], 0)}",
                fmt(r["cpu_ms_per_event"], 2),
                fmt(r.get("net_cpu_ms_per_event"), 2),
                fmt(r.get("idle_cpu_ms_per_s"), 1),
                fmt(r["cpu_us_per_stream"]),
                _lat(r),
                fmt(r["lost"]),
                fmt(r["wrong_user"]),
                fmt(r["kb_per_conn"]),
                fmt(r.get("drain_s")),
                _load(r),
            ]
        )
    return head, body


def many_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = [
        "Server (workers)",
        "Streams",
        "KB/conn",
        "Per-user p50 / p99 (ms)",
        "Lost / to another user",
        "CPU per event (ms)",
        "Broadcast deliveries/s",
        "Broadcast p99 (ms), lost",
        "Descriptors per worker",
        "Load avg",
    ]
    body = []
    for r in rows:
        if "error" in r:
            body.append(_error(r, len(head)))
            continue
        bc = r.get("broadcast") or {}
        broadcast = ("failed: " + bc["error"][:80]) if "error" in bc else fmt(bc.get("deliveries_per_s"))
        body.append(
            [
                f"{NAMES[r['server']]} ({r['workers']})",
                _streams(r),
                fmt(r["kb_per_conn"]),
                _lat(r),
                f"{fmt(r['lost'])} / {fmt(r['wrong_user'])}",
                fmt(r["cpu_ms_per_event"], 2),
                broadcast,
                f"{_lat(bc).split(' / ')[1]}, {fmt(bc.get('lost'))}" if bc and "error" not in bc else "–",
                ", ".join(fmt(x) for x in r.get("worker_fds", [])),
                _load(r),
            ]
        )
    return head, body


def hubs_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = [
        "Hubs × streams each",
        "Streams",
        "Events at /s",
        "Reader CPU per event (ms)",
        "Redis calls / µs per event",
        "Redis commands per event (calls, µs)",
        "p50 / p99 (ms)",
        "Lost",
        "Load avg",
    ]
    body = []
    for r in rows:
        if "error" in r:
            body.append([fmt(r["hubs"]), fmt(r["streams"]), "failed: " + r["error"][:160]] + [""] * 6)
            continue
        redis = r.get("redis") or {}
        commands = sorted((redis.get("commands") or {}).items(), key=lambda kv: -kv[1]["usec"])[:5]
        top = ", ".join(f"{name} {v['calls']:.1f} / {v['usec']:.0f}" for name, v in commands)
        body.append(
            [
                f"{r['hubs']:,} × {r.get('per_hub', '?')}",
                f"{_streams(r)} ({r.get('workers', 1)} worker{'s' if r.get('workers', 1) > 1 else ''})",
                f"{r['events']} at {fmt(r['rate'], 0)}",
                fmt(r["cpu_ms_per_event"], 2),
                f"{fmt(redis.get('calls_per_event'))} / {fmt(redis.get('usec_per_event'))}",
                top,
                _lat(r),
                fmt(r["lost"]),
                _load(r),
            ]
        )
    return head, body


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f} ×" if a is not None and b else "–"


def targets(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Issue 20's targets, against this run."""
    ours = {r["streams"]: r for r in results.get("per_user", []) if "error" not in r}
    many = {r["streams"]: r for r in results.get("many_streams", []) if "error" not in r}
    nchan = {r["streams"]: r for r in results.get("many_streams_nchan", []) if "error" not in r}
    body = []
    if ours:
        small, large = min(ours), max(ours)
        a, b = ours[small], ours[large]
        body.append(
            [
                f"Per-user: CPU per event at {large:,} ≤ 1.5 × at {small:,}",
                f"{fmt(b['cpu_ms_per_event'], 2)} vs {fmt(a['cpu_ms_per_event'], 2)} ms: "
                f"{_ratio(b['cpu_ms_per_event'], a['cpu_ms_per_event'])}",
            ]
        )
        body.append(
            [
                f"Per-user: p99 at {large:,} ≤ 2 × at {small:,}",
                f"{fmt(b['latency']['p99'])} vs {fmt(a['latency']['p99'])} ms: "
                f"{_ratio(b['latency']['p99'], a['latency']['p99'])}",
            ]
        )
        lost = sum(r["lost"] for r in ours.values())
        wrong = sum(r["wrong_user"] for r in ours.values())
        body.append(["Per-user: 0 lost, 0 to another user", f"{lost:,} lost, {wrong:,} to another user"])
    if many:
        top = max(many)
        r = many[top]
        body.append([f"{top:,} streams: ≤ 12 KB per connection", f"{fmt(r['kb_per_conn'])} KB"])
        body.append(
            [f"{top:,} streams: p99 ≤ 250 ms at the per-user rate, 0 lost", f"{_lat(r)} ms, {fmt(r['lost'])} lost"]
        )
        if top in nchan:
            n = nchan[top]
            body.append(
                [
                    f"{top:,} streams: ratio to nchan",
                    f"KB/conn {_ratio(r['kb_per_conn'], n['kb_per_conn'])}, "
                    f"p99 {_ratio(r['latency']['p99'], n['latency']['p99'])}, "
                    f"CPU per event {_ratio(r['cpu_ms_per_event'], n['cpu_ms_per_event'])}",
                ]
            )
    return ["Target (issue 20)", "Measured"], body


def section(results: dict[str, Any]) -> str:
    """The per-user tables, in Markdown."""
    out: list[str] = []
    limits = results.get("limits", {})
    out.append(f"- **Date:** {results.get('date', '?')}; **command:** ``{results.get('command', '?')}``")
    if results.get("machine"):
        ctx = context(results)
        out.append(f"- **Machine:** {ctx['machine']}")
        out.append(f"- **Software:** flask-notifications {ctx['commit']}, {ctx['versions']}; {results.get('nginx')}")
        out.append(f"- **Load before:** {ctx['before']}")
        out.append(f"- **Load after:** {ctx['after']}")
    if limits:
        out.append(
            f"- **Limits:** open files {limits['nofile_found']} (soft, hard) as found, raised to "
            f"{limits['nofile']} for the bench and its children; net.core.somaxconn "
            f"{' → '.join(limits['net.core.somaxconn'])}, net.ipv4.tcp_max_syn_backlog "
            f"{' → '.join(limits['net.ipv4.tcp_max_syn_backlog'])}; ephemeral ports "
            f"{'-'.join(limits['ip_local_port_range'])} (unchanged), so the servers listen on "
            f"{', '.join(limits['listen_addresses'])} and the clients use them in turn"
        )
    out.append("")
    for title, key, table in (
        ("Targets", None, None),
        ("Per-user streams, one process", "per_user", per_user_table),
        ("Per-user streams: nchan, the native anchor", "nchan", per_user_table),
        ("Many streams on one machine", "many_streams", many_table),
        ("Many streams on one machine: nchan", "many_streams_nchan", many_table),
        ("Many hubs", "many_hubs", hubs_table),
    ):
        if key is None:
            head, body = targets(results)
        elif results.get(key):
            head, body = table(results[key])  # type: ignore[misc]
        else:
            continue
        out.append(f"## {title}")
        out.append("")
        out.append(md_table(head, body))
        out.append("")
    refused = [
        r
        for key in ("per_user", "nchan", "many_streams", "many_streams_nchan", "many_hubs")
        for r in results.get(key, [])
        if r.get("failed")
    ]
    if refused:
        out.append("## Refused streams")
        out.append("")
    for r in refused:
        said = [line for line in r.get("server_log", "").splitlines() if "Refused" in line or "Error" in line]
        where = f"{r['hubs']:,} hubs" if "hubs" in r else f"{r['streams']:,} streams, {r['workers']} worker(s)"
        out.append(
            f"- {NAMES[r['server']]}, {where}: {r['failed']:,} of {r['streams']:,} streams refused"
            + (f"; the server's last words: ``{said[-1].strip()[:300]}``" if said else "")
        )
    return "\n".join(out)


#: What the recorded run found, written by hand after it.
FINDINGS = Path(__file__).resolve().parent / "per_user_findings.md"


def write(results: dict[str, Any], out: Path = OUT) -> None:
    mine = out.resolve() == OUT.resolve() and FINDINGS.exists()  # the findings are the recorded run's
    findings = "\n## Findings\n\n" + FINDINGS.read_text() if mine else ""
    (out / "report.md").write_text("# Scale benchmarks (issue 20)\n\n" + section(results) + findings + "\n" + NOTES)


#: How the figures are made.
NOTES = """
## Method

- **CPU per event** is the CPU time (user + system, psutil) of every serving process (gunicorn's workers;
  nginx's workers) from the first publish until the client has every event (or saw nothing for the idle
  timeout), divided by the events published. *Per stream* divides that by the open streams.
- **Latency** is publish → arrival: the publisher stamps ``time.time_ns()`` into the event, the client
  takes the time once per ``recv()``.
- **Lost** is the deliveries expected (each event to the streams of its one recipient that connected) minus
  the distinct ones that arrived. **To another user**: the client checks each arrival's recipient (carried in
  the event, and put in its ``recipients``) against the user of its own connection.
- **KB/conn** is (RSS of the serving processes with N streams − RSS after warm-up) / N.
- The load generator (the client processes, the publisher) and Redis share the two cores with the servers,
  and so did other engineers' work: every row gives the load average when it started.
"""


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT / "results.json"
    write(json.loads(path.read_text()), path.parent)
