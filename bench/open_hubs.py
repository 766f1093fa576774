"""Seconds to open many hubs at once, one stream each, under gevent:
``python -m bench.open_hubs [--hubs 10000] [--url redis://127.0.0.1:6379/0]``.

Each hub's stream adds its channel to the process's one Redis subscription
from its own greenlet, as ``Fanout.open`` does. It prints two lines, measured
the same way in this one run: *one by one* finds each stream's end with its
own round trip (``RedisPubSub.key_end``, what ``add`` did before
:mod:`flask_notifications.backends.stream_ends`), *shared* with the
subscription's own lookups. Each line gives the seconds until every ``add``
returned, and the server's read events meanwhile (``total_reads_processed``,
at least one per round trip; other clients of the server count too).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from flask_notifications.backends.redis import RedisPubSub  # noqa: E402


class _OneByOne:
    """The lookups before they were shared: one round trip per key."""

    def __init__(self, backend: RedisPubSub) -> None:
        self._backend = backend

    def find(self, key: str) -> tuple[str, int | None]:
        return self._backend.key_end(key)


def open_hubs(url: str, hubs: int, *, shared: bool) -> tuple[float, int]:
    prefix = f"bench-open-hubs-{uuid.uuid4().hex[:8]}"
    client: redis.Redis[bytes] = redis.Redis.from_url(url)
    backend = RedisPubSub(url=url, key_prefix=prefix)
    sub: Any = backend.subscribe()
    if not shared:
        sub._ends = _OneByOne(backend)  # noqa: SLF001 - the old path, for comparison
    try:
        seed = client.pipeline(transaction=False)
        for n in range(0, hubs, 2):
            seed.xadd(backend.stream_key(f"h{n}"), {"d": "old"})
        seed.execute()
        reads = int(client.info("stats")["total_reads_processed"])
        started = time.perf_counter()
        adds = [gevent.spawn(sub.add, f"h{n}") for n in range(hubs)]
        gevent.joinall(adds, raise_error=True)
        elapsed = time.perf_counter() - started
        return elapsed, int(client.info("stats")["total_reads_processed"]) - reads
    finally:
        sub.close()
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
        backend.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=10_000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    for label, shared in (("one by one", False), ("shared", True)):
        seconds, reads = open_hubs(args.url, args.hubs, shared=shared)
        print(f"{label:>10}: {args.hubs} hubs opened in {seconds:.3f} s, {reads} read events on the server")


if __name__ == "__main__":
    main()
