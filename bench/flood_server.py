"""Sends pre-built SSE frames as fast as it can, to measure the client's own
maximum parse rate (``bench.client --flood``).

``python -m bench.flood_server <port> <frame file> <frames per blob> <blobs per connection>``
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def main() -> None:
    port, template_file, per_blob, blobs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(template_file, "rb") as f:
        template = f.read()
    blob = b"".join(template.replace(b"@@SEQ@@", str(i).encode()) for i in range(per_blob))

    def handle(sock, address):  # type: ignore[no-untyped-def]
        request = b""
        while b"\r\n\r\n" not in request:
            data = sock.recv(4096)
            if not data:
                return
            request += data
        sock.sendall(HEAD)
        for _ in range(blobs):
            sock.sendall(blob)
        sock.close()

    StreamServer(("127.0.0.1", port), handle, backlog=4096).serve_forever()


if __name__ == "__main__":
    main()
