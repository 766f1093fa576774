"""Deliveries per second through one Redis node and through a three-master
Redis Cluster, measured in the same run: ``python -m bench.redis_topologies``.

Both topologies are started here, on free ports, from the ``redis-server``
on PATH (``redis-cli`` creates the cluster). For each, ``--publishers``
processes publish ``--events`` events in all over ``--hubs`` hubs with
:meth:`RedisPubSub.publish`, and ``--readers`` processes (each one
subscription, as one web process holds) read every hub. A delivery is one
event read by one reader; the rate is all deliveries over the time from the
first publish to the last read. The result goes to
``bench/results/redis_topologies.json`` and is printed as a table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_notifications.backends.redis import RedisPubSub  # noqa: E402
from tests.helpers import LocalCluster, RedisServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "redis_topologies.json"


def _hubs(count: int) -> list[str]:
    return [f"bench-hub-{n}" for n in range(count)]


def _read(url: str, prefix: str, hubs: int, expected: int, ready: Any, out: Any) -> None:
    backend = RedisPubSub(url=url, key_prefix=prefix, history_size=100_000)
    subscription = backend.subscribe()
    for hub in _hubs(hubs):
        subscription.add(hub)
    ready.put(os.getpid())
    got, lost = 0, 0
    deadline = time.monotonic() + 600
    while got < expected and time.monotonic() < deadline:
        got += len(subscription.get(1.0))
        lost += len(subscription.lost())
    out.put({"got": got, "lost": lost, "done": time.time()})
    subscription.close()
    backend.close()


def _publish(url: str, prefix: str, hubs: int, count: int, start: Any, out: Any) -> None:
    backend = RedisPubSub(url=url, key_prefix=prefix, history_size=100_000)
    names = _hubs(hubs)
    payload = json.dumps({"event_type": "bench", "body": "x" * 200})
    start.wait()
    began = time.time()
    for n in range(count):
        backend.publish(names[n % len(names)], payload)
    out.put({"began": began, "ended": time.time()})
    backend.close()


def measure(url: str, *, hubs: int, events: int, publishers: int, readers: int) -> dict[str, Any]:
    """Deliveries per second of one run against ``url``."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    ready, results, published = ctx.Queue(), ctx.Queue(), ctx.Queue()
    start = ctx.Event()
    per_publisher = events // publishers
    total = per_publisher * publishers
    procs = [ctx.Process(target=_read, args=(url, prefix, hubs, total, ready, results)) for _ in range(readers)]
    procs += [
        ctx.Process(target=_publish, args=(url, prefix, hubs, per_publisher, start, published))
        for _ in range(publishers)
    ]
    for proc in procs:
        proc.start()
    for _ in range(readers):
        ready.get(timeout=120)
    start.set()
    reads = [results.get(timeout=900) for _ in range(readers)]
    publishes = [published.get(timeout=900) for _ in range(publishers)]
    for proc in procs:
        proc.join(timeout=60)
    began = min(p["began"] for p in publishes)
    elapsed = max(r["done"] for r in reads) - began
    publish_elapsed = max(p["ended"] for p in publishes) - began
    delivered = sum(r["got"] for r in reads)
    return {
        "events": total,
        "delivered": delivered,
        "lost_reported": sum(r["lost"] for r in reads),
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(delivered / elapsed),
        "publishes_per_s": round(total / publish_elapsed),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=60)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=4)
    args = parser.parse_args(argv)
    options = {"hubs": args.hubs, "events": args.events, "publishers": args.publishers, "readers": args.readers}
    single, cluster = RedisServer(), LocalCluster()
    single.start()
    cluster.start()
    try:
        results = {
            "one node": measure(single.url, **options),
            "cluster of 3 masters": measure(cluster.url, **options),
        }
    finally:
        single.remove()
        cluster.stop()
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "options": options,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'topology':<22} {'events':>7} {'delivered':>9} {'deliveries/s':>12} {'publishes/s':>11} {'lost':>5}")
    for name, row in results.items():
        print(
            f"{name:<22} {row['events']:>7} {row['delivered']:>9} {row['deliveries_per_s']:>12} "
            f"{row['publishes_per_s']:>11} {row['lost_reported']:>5}"
        )


if __name__ == "__main__":
    main()
