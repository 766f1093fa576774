"""Serve :mod:`tests.apps.sse_app` with gevent.pywsgi, monkey-patched as a
gevent deployment is: ``python -m tests.apps.serve_sse PORT [SNDBUF]``.

It prints ``READY <port>`` once it accepts connections. A non-zero SNDBUF
shrinks the send buffer of every connection (a slow client fills it fast).
"""

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from tests.apps.sse_app import create_app  # noqa: E402


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sndbuf = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    listener.bind(("127.0.0.1", port))
    listener.listen(2048)
    server = WSGIServer(listener, create_app(), log=None)
    server.start()
    print(f"READY {listener.getsockname()[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
