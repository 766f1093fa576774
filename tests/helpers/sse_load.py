"""A load generator of SSE clients, run in a process of its own::

    python -m tests.helpers.sse_load URL CLIENTS END_SEQ [TIMEOUT]

It opens CLIENTS concurrent streams of URL with asyncio (HTTP/1.0, so the
body is the raw event stream), collects the ``seq`` field of every event
each one receives, and stops when every client has received the event whose
``seq`` is END_SEQ, or at TIMEOUT seconds. It prints ``READY <n>`` once all
streams are open, then a JSON summary on its last line: per-client counts of
events, of sequence numbers missing or repeated, and the HTTP statuses.
Losses are counted by sequence number, independently of the server's code.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


class Stream:
    def __init__(self) -> None:
        self.status = 0
        self.seqs: list[int] = []
        self.done = asyncio.Event()
        self.closed = False

    async def run(self, url: str, end_seq: int, opened: asyncio.Queue[int]) -> None:
        parts = urlsplit(url)
        try:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
        except OSError:
            await opened.put(0)
            self.closed = True
            self.done.set()
            return
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.status = int(head.split(b" ", 2)[1])
            await opened.put(self.status)
            if self.status != 200:
                return
            while not self.done.is_set():
                frame = await reader.readuntil(b"\n\n")
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        seq = json.loads(line[6:]).get("seq")
                        if isinstance(seq, int):
                            self.seqs.append(seq)
                            if seq == end_seq:
                                self.done.set()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            self.closed = True
        finally:
            self.done.set()
            writer.close()


def summarize(streams: list[Stream], end_seq: int) -> dict[str, Any]:
    expected = set(range(end_seq + 1))
    missing = [len(expected - set(s.seqs)) for s in streams]
    repeated = [len(s.seqs) - len(set(s.seqs)) for s in streams]
    disordered = sum(1 for s in streams if s.seqs != sorted(s.seqs))
    return {
        "clients": len(streams),
        "statuses": dict(Counter(str(s.status) for s in streams)),
        "complete": sum(1 for m in missing if m == 0),
        "events_received": sum(len(s.seqs) for s in streams),
        "missing": sum(missing),
        "repeated": sum(repeated),
        "disordered": disordered,
        "closed_early": sum(1 for s, m in zip(streams, missing, strict=True) if s.closed and m),
    }


async def main(url: str, clients: int, end_seq: int, timeout: float) -> dict[str, Any]:
    streams = [Stream() for _ in range(clients)]
    opened: asyncio.Queue[int] = asyncio.Queue()
    tasks = [asyncio.create_task(s.run(url, end_seq, opened)) for s in streams]
    for _ in range(clients):
        await opened.get()
    print(f"READY {clients}", flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in streams)), timeout)
    except TimeoutError:
        pass
    summary = summarize(streams, end_seq)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return summary


if __name__ == "__main__":
    url, clients, end_seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    print(json.dumps(asyncio.run(main(url, clients, end_seq, timeout))), flush=True)
