"""The raw limit: one Redis subscription, each frame encoded once and written
to every socket. No framework, no per-client work beyond the write.

``python -m bench.raw_server <port> <redis url> <channel>``
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
sockets: set[object] = set()


def handle(sock, address):  # type: ignore[no-untyped-def]
    request = b""
    while b"\r\n\r\n" not in request:
        data = sock.recv(4096)
        if not data:
            return
        request += data
    sock.sendall(HEAD + b"retry: 3000\n\n")
    sockets.add(sock)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    finally:
        sockets.discard(sock)


def pump(url: str, channel: str) -> None:
    pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    for message in pubsub.listen():
        frame = b"event: bench\ndata: " + message["data"] + b"\n\n"
        for sock in list(sockets):
            try:
                # The plain (non-blocking) socket's send; gevent's sendall only
                # when the kernel buffer is full.
                sent = sock._sock.send(frame)  # type: ignore[attr-defined]
                if sent < len(frame):
                    sock.sendall(frame[sent:])  # type: ignore[attr-defined]
            except BlockingIOError:
                sock.sendall(frame)  # type: ignore[attr-defined]
            except OSError:
                sockets.discard(sock)


def main() -> None:
    port, url, channel = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    gevent.spawn(pump, url, channel)
    StreamServer(("127.0.0.1", port), handle, backlog=4096).serve_forever()


if __name__ == "__main__":
    main()
