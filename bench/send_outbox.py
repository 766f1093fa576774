"""The cost of the outbox on ``send()``: ``send()`` (and ``send_many()`` of
100) to a Redis that is the broker and the ledger, with the outbox on and
off, in alternating rounds in one process, so both see the same machine.

    python -m bench.send_outbox [--seconds 3] [--rounds 3] [--profile out.txt]
    python -m bench.send_outbox --against ../other-checkout [--rounds 10]

Prints one line per round and the median of each scenario. Nothing consumes
the messages; the queue is emptied after each round. ``--profile`` runs
pyinstrument over one extra round of ``send()`` with the outbox on.

``--against DIR`` compares this checkout's ``send()`` with the package of
another checkout (``main``, say), outbox on, side by side: one process per
checkout, each sending for ``--seconds`` in turn, ``--rounds`` times, so a
machine shared with other work slows both alike.
Settings: ``BENCH_REDIS_URL`` (default the local Redis), ``BENCH_PREFIX``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench import ours_app
from flask_notifications.event import Event

BODY = "Benchmark body " * 8


def _rate(hubs: int, batch: int, outbox: bool, seconds: float) -> float:
    prefix = f"{os.environ.get('BENCH_PREFIX', 'fn-bench')}-{uuid.uuid4().hex[:8]}"
    queue = f"{prefix}-sendq"
    timeout = 60 if outbox else None
    app, notifications, _ = ours_app.make_app(
        hubs=hubs, queue=queue, NOTIFICATIONS_KEY_PREFIX=prefix, NOTIFICATIONS_OUTBOX_TIMEOUT=timeout
    )

    def send() -> int:
        if batch:
            notifications.send_many(
                [Event(None, "bench", "Benchmark event", BODY, sender="bench") for _ in range(batch)]
            )
            return batch
        notifications.send(Event(None, "bench", "Benchmark event", BODY, sender="bench"))
        return 1

    try:
        with app.app_context():
            for _ in range(20):
                send()
            sent = 0
            start = time.perf_counter()
            deadline = start + seconds
            while time.perf_counter() < deadline:
                sent += send()
            elapsed = time.perf_counter() - start
    finally:
        notifications.get_backend(app).close()
        client: Any = redis.Redis.from_url(ours_app.REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    return sent / elapsed


SCENARIOS = [("send(), 1 hub", 1, 0), ("send(), 10 hubs", 10, 0), ("send_many() of 100, 1 hub", 1, 100)]


def _serve() -> None:
    """Answer each ``hubs batch outbox seconds`` line of stdin with a rate."""
    for line in sys.stdin:
        hubs, batch, outbox, seconds = line.split()
        print(_rate(int(hubs), int(batch), outbox == "1", float(seconds)), flush=True)


def _against(other: Path, seconds: float, rounds: int) -> None:
    here = Path(__file__).resolve().parents[1]
    script = str(Path(__file__).resolve())
    procs = {}
    for name, root in (("this checkout", here), (f"{other}", other.resolve())):
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{here}"}
        procs[name] = subprocess.Popen(
            [sys.executable, script, "--serve"],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        for round_ in range(rounds):
            for scenario, hubs, batch in SCENARIOS:
                order = list(procs) if round_ % 2 == 0 else list(reversed(procs))
                for name in order:
                    proc = procs[name]
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(f"{hubs} {batch} 1 {seconds}\n")
                    proc.stdin.flush()
                    rate = float(proc.stdout.readline())
                    rates.setdefault((scenario, name), []).append(rate)
                    print(f"round {round_ + 1}: {scenario}, {name}: {rate:,.0f} events/s", flush=True)
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    names = list(procs)
    print(f"\nMedians, outbox on ({rounds} rounds of {seconds} s each):")
    for scenario, _, _ in SCENARIOS:
        this, that = (statistics.median(rates[(scenario, name)]) for name in names)
        print(f"{scenario:<28}{that:>10,.0f}/s before {this:>10,.0f}/s after {(this / that - 1) * 100:>+5.0f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="write a pyinstrument profile of send() with the outbox here")
    parser.add_argument("--against", type=Path, help="another checkout to compare send() with")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve()
        return
    if args.against is not None:
        _against(args.against, args.seconds, args.rounds)
        return
    results: dict[tuple[str, bool], list[float]] = {}
    for round_ in range(args.rounds):
        for name, hubs, batch in SCENARIOS:
            for outbox in (False, True) if round_ % 2 == 0 else (True, False):
                rate = _rate(hubs, batch, outbox, args.seconds)
                results.setdefault((name, outbox), []).append(rate)
                print(f"round {round_ + 1}: {name}, outbox {'on ' if outbox else 'off'}: {rate:,.0f} events/s")
    print()
    print(f"{'scenario':<28}{'without outbox':>16}{'with outbox':>14}{'change':>9}")
    for name, _, _ in SCENARIOS:
        off = statistics.median(results[(name, False)])
        on = statistics.median(results[(name, True)])
        print(f"{name:<28}{off:>14,.0f}/s{on:>12,.0f}/s{(on / off - 1) * 100:>8.0f}%")
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        _rate(1, 0, True, args.seconds)
        profiler.stop()
        with open(args.profile, "w") as out:
            out.write(profiler.output_text(unicode=False, color=False, show_all=False))
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
