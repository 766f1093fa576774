"""A database that stops answering: a TCP proxy to a real server that can be
switched to silent, when it still accepts connections and still receives
(the kernel acknowledges every byte) but forwards nothing either way, as a
stalled PostgreSQL or a wedged proxy in front of it does."""

from __future__ import annotations

import socket
import threading


class SilentProxy:
    """Forward ``127.0.0.1:<port>`` to ``target`` while answering.

    :meth:`silence` stops every byte, on the connections open now and on the
    ones accepted later; :meth:`answer` lets them flow again.
    :attr:`accepted` counts the connections accepted.

    :param answering: whether it forwards from the start.
    """

    def __init__(self, target: tuple[str, int], *, answering: bool = True) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self._answering = answering
        self._closed = False
        self._cond = threading.Condition()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self) -> None:
        with self._cond:
            self._answering = False

    def answer(self) -> None:
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

    def close(self) -> None:
        """Stop, and drop every connection (a client still waiting on one
        gets an error at once)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            sockets, self._sockets = self._sockets, []
        self.listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
