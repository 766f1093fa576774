"""The SSE load client: one process holding many connections on one epoll loop.

Each connection sends one ``GET``, checks for ``200``, then reads. Every event
payload carries ``"bench": "<seq>:<send time ns>"``; the client finds these
markers with one regular expression over what each ``recv()`` returned,
without decoding the JSON or the SSE framing further, so a delivery costs
little. The receive time is taken once per ``recv()``. There are no
greenlets: one ``epoll`` loop reads every ready socket, so a busy server
gives the client bigger reads rather than more wake-ups.

Protocol with the driver (``bench.run``), over stdin/stdout, one line each:

- the client prints ``READY <connected> <failed>`` once every connection has
  its response headers (or, with ``--lazy-headers``, has sent its request);
- the driver writes ``EXPECT <total>``: sequence numbers ``0 .. total-1``;
- the client stops when every connection has them all, or nothing arrived
  for ``--idle`` seconds, or the server closed every connection; it writes
  its records to ``--out`` (``.npz``) and prints ``DONE``.

``--flood`` reads until the server closes every connection, without
``EXPECT``: the client's own ceiling against ``bench.flood_server``.

``--first K`` makes the connections users (per-user streams): connection
``i`` of this process is user ``(K + i) // --group`` (one connection per
user by default; the many-hubs run makes each "user" a hub of ``--group``
streams), and ``{user}`` in ``--path`` and in each ``--header`` becomes its
number. Each payload then carries its recipient,
``"bench": "<seq>:<send time ns>:u<user>"``; an arrival for another user is
counted (``wrong``), not recorded. Event ``seq`` goes to user
``users_of(seed, users, total)[seq]``, which the driver and the client
compute alike, so ``EXPECT`` stays one number: the client waits for the
events of the users it connected.

``--host`` may list several addresses (comma-separated), used in turn: past
about 28,000 connections to one address and port, the ephemeral ports run
out.

``--ws`` speaks Engine.IO 4 over WebSocket instead (Flask-SocketIO): it
upgrades, joins the default namespace (``40``), answers the server's pings,
and finds the same markers in the ``42["bench", {...}]`` messages.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import socket
import sys
import time
from array import array

import numpy as np

MARK = re.compile(rb'"bench": ?"(\d+):(\d+)"')
USER_MARK = re.compile(rb'"bench": ?"(\d+):(\d+):u(\d+)"')
#: A WebSocket text frame holding Engine.IO's ping, ``2``.
WS_PING = b"\x81\x012"


def ws_frame(text: bytes) -> bytes:
    """A masked client text frame (short payloads only)."""
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))


def users_of(seed: int, users: int, total: int) -> np.ndarray:
    """The recipient (user number) of each event ``0 .. total-1`` of a per-user run."""
    return np.random.default_rng(seed).integers(0, users, total)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--max-seq", type=int, required=True, help="upper bound of sequence numbers")
    parser.add_argument("--out", required=True)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--flood", action="store_true")
    parser.add_argument("--lazy-headers", action="store_true", help="count a connection once its request is sent")
    parser.add_argument("--ws", action="store_true", help="Engine.IO over WebSocket (Flask-SocketIO)")
    parser.add_argument("--first", type=int, help="per-user streams: the number of this process's first connection")
    parser.add_argument("--group", type=int, default=1, help="per-user streams: connections per user")
    parser.add_argument("--users", type=int, default=0, help="per-user streams: users in all client processes")
    parser.add_argument("--seed", type=int, default=0, help="per-user streams: the seed of the recipients")
    parser.add_argument("--header", action="append", default=[], help="an extra request header; may hold {user}")
    args = parser.parse_args()
    per_user = args.first is not None
    user_of = [((args.first or 0) + i) // args.group for i in range(args.conns)]
    hosts = args.host.split(",")

    if args.ws:
        request = (
            f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        ok_status: tuple[bytes, ...] = (b"HTTP/1.1 101",)
        end = b"}]"
    else:
        extra = "".join(f"{header}\r\n" for header in args.header)
        request = (
            f"GET {args.path} HTTP/1.1\r\nHost: {hosts[0]}:{args.port}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{extra}\r\n"
        ).encode()
        ok_status = (b"HTTP/1.1 200", b"HTTP/1.0 200")
        end = b"\n\n"
    upgraded = [False] * args.conns
    time_ns = time.time_ns
    seqs, sent, recv = array("i"), array("q"), array("q")
    n = args.conns
    marks = [bytearray(args.max_seq) for _ in range(n)]
    wrong = got = wanted = 0
    counts = [0] * n
    buffers = [b""] * n
    headed = [False] * n
    socks: dict[int, socket.socket] = {}
    index_of: dict[int, int] = {}
    poller = select.epoll()
    failed: set[int] = set()
    dups = 0

    for index in range(n):
        try:
            sock = socket.create_connection((hosts[index % len(hosts)], args.port), timeout=30)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            if per_user:
                sock.sendall(request.replace(b"{user}", str(user_of[index]).encode()))
            else:
                sock.sendall(request)
        except OSError as exc:
            failed.add(index)
            if len(failed) <= 3:
                print(f"connection {index} failed: {exc}", file=sys.stderr, flush=True)
            continue
        sock.setblocking(False)
        socks[sock.fileno()] = sock
        index_of[sock.fileno()] = index
        poller.register(sock.fileno(), select.EPOLLIN)

    def close(fd: int) -> None:
        poller.unregister(fd)
        socks.pop(fd).close()

    def headers(fd: int, index: int) -> bool:
        if not upgraded[index]:
            head, sep, rest = buffers[index].partition(b"\r\n\r\n")
            if not sep:
                return False
            if not head.startswith(ok_status):
                failed.add(index)
                if len(failed) <= 3:
                    print(f"connection {index} refused: {head[:80]!r}", file=sys.stderr, flush=True)
                close(fd)
                return False
            buffers[index] = rest
            upgraded[index] = True
            if args.ws:
                socks[fd].send(ws_frame(b"40"))  # join the default namespace
        if args.ws:
            # Headed once the namespace answered: 40{"sid": ...}.
            _, sep, rest = buffers[index].partition(b"40{")
            if not sep:
                return False
            buffers[index] = rest
        headed[index] = True
        return True

    ready_said = False
    expect: int | None = None
    stdin = sys.stdin.fileno()
    if not args.flood:
        poller.register(stdin, select.EPOLLIN)
    last = time.monotonic()
    complete = 0

    while True:
        if not ready_said:
            waiting = sum(1 for fd in socks if not headed[index_of[fd]])
            if args.lazy_headers or waiting == 0:
                print(f"READY {len(socks)} {len(failed)}", flush=True)
                ready_said = True
        if not socks:
            if not ready_said:
                print(f"READY 0 {len(failed)}", flush=True)
            break
        if expect is not None and (complete >= len(socks) or time.monotonic() - last > args.idle):
            break
        for fd, _ in poller.poll(0.2):
            if fd == stdin:
                line = os.read(stdin, 4096).decode()
                if line.startswith("EXPECT") and per_user:
                    expect = int(line.split()[1])
                    per = np.bincount(users_of(args.seed, args.users, expect), minlength=args.users)
                    wanted = int(sum(per[user_of[index_of[f]]] for f in socks))
                    complete = len(socks) if got >= wanted else 0
                    last = time.monotonic()
                elif line.startswith("EXPECT"):
                    expect = int(line.split()[1])
                    complete = sum(1 for f in socks if counts[index_of[f]] >= expect)
                    last = time.monotonic()
                poller.unregister(stdin)
                continue
            sock = socks.get(fd)
            if sock is None:
                continue
            index = index_of[fd]
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                close(fd)
                continue
            now = time_ns()
            if args.ws and WS_PING in data:
                for _ in range(data.count(WS_PING)):
                    sock.send(ws_frame(b"3"))
            buf = buffers[index]
            buf = buf + data if buf else data
            if not headed[index]:
                buffers[index] = buf
                if not headers(fd, index):
                    continue
                buf = buffers[index]
            cut = buf.rfind(end)
            if cut < 0:
                buffers[index] = buf
                continue
            chunk, buffers[index] = buf[:cut], buf[cut + 2 :]
            mark = marks[index]
            count = counts[index]
            for match in (USER_MARK if per_user else MARK).finditer(chunk):
                if per_user and int(match[3]) != user_of[index]:
                    wrong += 1
                    continue
                seq = int(match[1])
                if mark[seq]:
                    dups += 1
                else:
                    mark[seq] = 1
                    count += 1
                seqs.append(seq)
                sent.append(int(match[2]))
                recv.append(now)
            if per_user:
                got += count - counts[index]
                if expect is not None and got >= wanted:
                    complete = len(socks)
            elif expect is not None and counts[index] < expect <= count:
                complete += 1
            counts[index] = count
            last = time.monotonic()

    for fd in list(socks):
        close(fd)
    limit = expect or args.max_seq
    received = [counts[i] if per_user else bytes(marks[i][:limit]).count(1) for i in range(n) if i not in failed]
    np.savez(
        args.out,
        seq=np.frombuffer(seqs, dtype=np.int32),
        sent=np.frombuffer(sent, dtype=np.int64),
        recv=np.frombuffer(recv, dtype=np.int64),
        received=np.array(received, dtype=np.int64),
        failed=len(failed),
        failed_users=np.array(sorted(user_of[i] for i in failed), dtype=np.int64),
        dups=dups,
        wrong=wrong,
    )
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
