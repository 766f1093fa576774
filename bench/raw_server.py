"""The raw limit: one Redis subscription, each frame encoded once and written
to every socket. No framework, no per-client work beyond the write.

``python -m bench.raw_server <port> <redis url> <channel> [--coalesce]``

By default it writes each frame as it arrives, one ``send()`` per frame and
socket. With ``--coalesce`` it takes every message Redis has already
delivered, joins their frames, and writes that once to each socket: the
shape of the limit for a server that batches.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
#: Open sockets, and the bytes each still has to write (a full buffer).
sockets: dict[object, list[bytes]] = {}
#: Most messages joined into one write.
COALESCE_MAX = 256


def handle(sock, address):  # type: ignore[no-untyped-def]
    request = b""
    while b"\r\n\r\n" not in request:
        data = sock.recv(4096)
        if not data:
            return
        request += data
    sock.sendall(HEAD + b"retry: 3000\n\n")
    sockets[sock] = []
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    finally:
        sockets.pop(sock, None)


def flush(sock) -> None:  # type: ignore[no-untyped-def]
    """Write what a full buffer left, in order, in the socket's own greenlet."""
    pending = sockets.get(sock)
    try:
        while pending:
            sock.sendall(pending[0])  # type: ignore[attr-defined]
            pending.pop(0)
    except OSError:
        sockets.pop(sock, None)


def write(sock, data: bytes) -> None:  # type: ignore[no-untyped-def]
    pending = sockets.get(sock)
    if pending is None:
        return
    if pending:
        pending.append(data)
        return
    try:
        # The plain (non-blocking) socket's send; gevent's sendall only
        # when the kernel buffer is full.
        sent = sock._sock.send(data)  # type: ignore[attr-defined]
    except BlockingIOError:
        sent = 0
    except OSError:
        sockets.pop(sock, None)
        return
    if sent < len(data):
        pending.append(data[sent:])
        gevent.spawn(flush, sock)


def frame(data: bytes) -> bytes:
    return b"event: bench\ndata: " + data + b"\n\n"


def pump(url: str, channel: str, coalesce: bool) -> None:
    pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    while True:
        message = pubsub.get_message(timeout=1.0)
        if message is None:
            continue
        frames = [frame(message["data"])]
        while coalesce and len(frames) < COALESCE_MAX:
            more = pubsub.get_message(timeout=0.0)
            if more is None:
                break
            frames.append(frame(more["data"]))
        for data in frames if not coalesce else [b"".join(frames)]:
            for sock in list(sockets):
                write(sock, data)


def main() -> None:
    port, url, channel = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    coalesce = "--coalesce" in sys.argv[4:]
    gevent.spawn(pump, url, channel, coalesce)
    StreamServer(("127.0.0.1", port), handle, backlog=4096).serve_forever()


if __name__ == "__main__":
    main()
