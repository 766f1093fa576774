"""The Redis reader alone: one subscription following H hubs (issue 20, "many hubs").

``python bench/reader.py --hubs 100,1000,10000 --events 300 --rate 50``

For each H, a private ``redis-server`` (``--save ''``), H hubs each with one
entry, and one :class:`~flask_notifications.backends.redis.RedisPubSub`
subscription following all of them, read by one thread calling ``get()``
as the fan-out's listener does. Then:

- **idle**: ``--idle`` seconds without events: the reader's Redis commands
  a second and its CPU (``time.thread_time`` of the reading thread);
- **events**: ``--events`` events, each to one random hub, at ``--rate`` a
  second: the reader's Redis commands per event (``INFO commandstats``, less
  the publisher's ``XADD``, ``XTRIM`` and ``EXPIRE``), its CPU per event, and
  the latency from publish to ``get()``.

``--base DIR`` measures the library found in ``DIR`` instead (a copy of
another commit: ``git archive COMMIT flask_notifications | tar -x -C DIR``),
in a child process, so that two versions compare within one run. The
results go to ``--out`` (JSON) and to standard output.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: The publisher's commands, left out of the reader's count.
PUBLISHER = ("xadd", "xtrim", "expire")


def commandstats(client: Any) -> dict[str, tuple[int, int]]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in stats.items()}


def delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    out = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0 and name not in PUBLISHER:
            out[name] = (calls - c0, usec - u0)
    return out


class Reader(threading.Thread):
    """Calls ``get()`` in a loop, as the fan-out's listener does."""

    def __init__(self, subscription: Any) -> None:
        super().__init__(daemon=True)
        self.subscription = subscription
        self.received: list[tuple[int, int]] = []  # (sent ns, received ns)
        self.cpu = 0.0
        self.stop = False
        self.lost = 0

    def run(self) -> None:
        while not self.stop:
            messages = self.subscription.get(1.0)
            now = time.time_ns()
            self.lost += len(self.subscription.lost())
            for message in messages:
                if message.data.startswith("bench:"):
                    self.received.append((int(message.data.split(":")[1]), now))
            self.cpu = time.thread_time()


def measure(url: str, hubs: int, events: int, rate: float, idle: float) -> dict[str, Any]:
    import redis

    import flask_notifications
    from flask_notifications.backends.redis import RedisPubSub

    prefix = f"reader-{os.getpid()}"
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for hub in range(hubs):
        pipe.xadd(f"{prefix}:hub:h{hub}", {"d": "seed"})
    pipe.execute()
    backend = RedisPubSub(url=url, key_prefix=prefix)
    publisher = RedisPubSub(url=url, key_prefix=prefix)
    subscription = backend.subscribe()
    started = time.perf_counter()
    for hub in range(hubs):
        subscription.add(f"h{hub}")
    row: dict[str, Any] = {"hubs": hubs, "library": str(Path(flask_notifications.__file__).parent.parent)}
    row["add_s"] = time.perf_counter() - started
    reader = Reader(subscription)
    reader.start()
    # The first reads check every hub once: wait until a warm-up event arrived.
    publisher.publish(f"h{hubs - 1}", f"bench:{time.time_ns()}:warm")
    deadline = time.monotonic() + 300
    while not reader.received and time.monotonic() < deadline:
        time.sleep(0.05)
    row["warm_s"] = time.perf_counter() - started - row["add_s"]
    time.sleep(1.0)
    reader.received.clear()
    row["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    stats0, cpu0 = commandstats(client), reader.cpu
    time.sleep(idle)
    used = delta(stats0, commandstats(client))
    row["idle_commands_per_s"] = sum(c for c, _ in used.values()) / idle
    row["idle_redis_us_per_s"] = sum(u for _, u in used.values()) / idle
    row["idle_cpu_ms_per_s"] = (reader.cpu - cpu0) / idle * 1e3
    rng = random.Random(20)
    stats0, cpu0 = commandstats(client), reader.cpu
    start = time.perf_counter()
    for seq in range(events):
        pause = start + seq / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        publisher.publish(f"h{rng.randrange(hubs)}", f"bench:{time.time_ns()}:{seq}")
    deadline = time.monotonic() + 120
    while len(reader.received) < events and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    used = delta(stats0, commandstats(client))
    row["events"], row["received"], row["lost_reported"] = events, len(reader.received), reader.lost
    row["commands_per_event"] = sum(c for c, _ in used.values()) / events
    row["redis_us_per_event"] = sum(u for _, u in used.values()) / events
    row["per_command"] = {name: round(c / events, 2) for name, (c, _) in sorted(used.items())}
    row["cpu_ms_per_event"] = (reader.cpu - cpu0) / events * 1e3
    lat = sorted((r - s) / 1e6 for s, r in reader.received)
    if lat:
        row["p50_ms"] = lat[len(lat) // 2]
        row["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    row["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    reader.stop = True
    reader.join(timeout=5)
    subscription.close()
    backend.close()
    publisher.close()
    client.delete(*[f"{prefix}:hub:h{hub}" for hub in range(hubs)]) if hubs else None
    client.close()
    return row


def private_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hubs", default="100,1000,10000")
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--base", action="append", default=[], help="also measure the library in DIR")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        url, hubs = args.child.rsplit(" ", 1)
        print(json.dumps(measure(url, int(hubs), args.events, args.rate, args.idle)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-reader-") as tmp:
        for hubs in (int(h) for h in args.hubs.split(",")):
            for code in [str(HERE.parent), *args.base]:
                proc, url = private_redis(Path(tmp))
                try:
                    env = dict(os.environ, PYTHONPATH=code)
                    cmd = [sys.executable, "-u", __file__, "--child", f"{url} {hubs}"]
                    cmd += ["--events", str(args.events), "--rate", str(args.rate), "--idle", str(args.idle)]
                    out = subprocess.run(cmd, env=env, cwd=code, capture_output=True, text=True, check=True)
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                finally:
                    proc.terminate()
                    proc.wait()
                row["code"] = code
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "per_command"}), flush=True)
                print("   ", row["per_command"], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"argv": argv, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
