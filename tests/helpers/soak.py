"""The long soak of the SSE endpoint, beyond the suite's time budget::

    python -m tests.helpers.soak --clients 1000 --seconds 60 --rate 10

It serves ``tests/apps/sse_app.py`` with gevent in a process of its own,
opens CLIENTS streams from an asyncio process (``sse_load.py``), publishes
RATE events a second for SECONDS seconds to the hub's Redis stream (as the
workers' PushConsumer does), and samples the server's RSS every second. It
prints the figures as JSON and exits non-zero if any client missed, repeated
or reordered an event, was refused, or the RSS grew by more than
``--rss-growth-mib`` after the first third of the run.

Redis comes from ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); every
key it writes has a fresh prefix and is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

import redis

from flask_notifications.backends.redis import RedisPubSub
from tests.helpers import delete_keys, make_config, wait_for
from tests.helpers.web_servers import Server
from tests.streaming.test_load import NEWS, LoadClients, _publish_steadily


def soak(redis_url: str, clients: int, seconds: int, rate: float, growth_mib: float) -> dict[str, Any]:
    prefix = f"fn-soak-{uuid.uuid4().hex[:12]}"
    config = make_config(
        redis_url,
        prefix,
        NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None,
        NOTIFICATIONS_SSE_HEARTBEAT=5.0,
        NOTIFICATIONS_HISTORY_SIZE=max(1000, int(seconds * rate) + 100),
    )
    events = int(seconds * rate)
    server = Server("gevent", config)
    assert server.proc is not None
    publisher = RedisPubSub(url=redis_url, key_prefix=prefix)
    load = None
    try:
        load = LoadClients(f"{server.base}/notifications/{NEWS}/events", clients, events - 1, timeout=seconds * 4 + 120)
        wait_for(lambda: server.stats()["subscribers"] == clients, timeout=120)
        samples = _publish_steadily(publisher, events, rate=rate, pid=server.proc.pid)
        summary = load.result()
        stats = server.stats()
    finally:
        if load is not None:
            load.kill()
        server.kill()
        publisher.close()
        client = redis.Redis.from_url(redis_url)
        delete_keys(client, prefix)
        client.close()
    baseline = samples[len(samples) // 3]
    growth_kib = max(samples[len(samples) // 3 :]) - baseline
    figures = {
        **summary,
        "seconds": seconds,
        "rate": rate,
        "events": events,
        "deliveries_expected": events * clients,
        "evicted": stats["evicted"],
        "rss_kib_first": samples[0],
        "rss_kib_baseline": baseline,
        "rss_kib_max": max(samples),
        "rss_kib_last": samples[-1],
        "rss_growth_kib": growth_kib,
    }
    figures["ok"] = (
        summary["statuses"] == {"200": clients}
        and summary["complete"] == clients
        and summary["missing"] == summary["repeated"] == summary["disordered"] == 0
        and stats["evicted"] == 0
        and growth_kib <= growth_mib * 1024
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--rss-growth-mib", type=float, default=16.0)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    figures = soak(redis_url, args.clients, args.seconds, args.rate, args.rss_growth_mib)
    json.dump(figures, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
