"""A TCP proxy between a test's client and a real shared server, which the
test can break without touching the server behind it.

- :meth:`TcpProxy.cut` drops every connection at once, as when a broker
  closes its connections or the network fails.
- :attr:`TcpProxy.refusing` closes new connections as soon as they arrive.
- :meth:`TcpProxy.silence` makes it go silent: it still accepts connections
  and still receives (the kernel acknowledges every byte) but forwards
  nothing either way, as a stalled PostgreSQL or a wedged proxy in front of
  it does; :meth:`TcpProxy.answer` lets the bytes flow again.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``.

    :attr:`accepted` counts the connections accepted (refused ones aside),
    :attr:`cuts` the calls to :meth:`cut`.

    :param answering: whether it forwards from the start.
    """

    def __init__(self, target: tuple[str, int], *, answering: bool = True) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.refusing = threading.Event()
        self.accepted = 0
        self.cuts = 0
        self._answering = answering
        self._closed = False
        self._cond = threading.Condition()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def in_front_of(cls, url: str, default_port: int, *, answering: bool = True) -> TcpProxy:
        """A proxy to the server that ``url`` names (its port, or ``default_port``)."""
        parts = urlsplit(url)
        return cls((parts.hostname or "127.0.0.1", parts.port or default_port), answering=answering)

    def url_through(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's, its
        credentials kept."""
        parts = urlsplit(url)
        credentials, at, _ = parts.netloc.rpartition("@")
        return parts._replace(netloc=f"{credentials}{at}127.0.0.1:{self.port}").geturl()

    def silence(self) -> None:
        """Stop every byte, on the connections open now and on the ones
        accepted later."""
        with self._cond:
            self._answering = False

    def answer(self) -> None:
        """Forward again, after :meth:`silence`."""
        with self._cond:
            self._answering = True
            self._cond.notify_all()

    def _wait_answering(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._answering or self._closed)
            return not self._closed

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                client.close()
                continue
            with self._cond:
                self.accepted += 1
                self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if not self._wait_answering():
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._cond:
            self._sockets.append(upstream)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self._wait_answering():
                    return
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Drop every connection open now (a client still waiting on one
        gets an error at once)."""
        with self._cond:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.cuts += 1

    def close(self) -> None:
        """Stop, and drop every connection."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.listener.close()
        self.cut()
