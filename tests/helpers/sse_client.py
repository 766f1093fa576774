"""An independent server-sent events client for the tests: HTTP/1.1 over a
raw socket (chunked or close-delimited bodies) and the event-stream parser of
the WHATWG HTML standard (section "Interpreting an event stream"), written
from the specification, not from the server's code.
"""

from __future__ import annotations

import codecs
import re
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: A line ends with CRLF, LF or CR.
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEEvent:
    """A dispatched event, as ``EventSource`` would fire it."""

    type: str
    data: str
    last_event_id: str


@dataclass
class Parser:
    """The WHATWG event-stream parser. :meth:`feed` takes decoded text in any
    pieces and returns the events dispatched so far."""

    last_event_id: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    _data: list[str] = field(default_factory=list)
    _type: str = ""
    _id: str = ""
    _line: list[str] = field(default_factory=list)
    _skip_lf: bool = False
    _started: bool = False

    def feed(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not text:
            return events
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf:
            # The last piece ended with CR: an LF that opens this one ends
            # the same line (CRLF split across two reads).
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        start = 0
        for found in _LINE_END.finditer(text):
            self._line.append(text[start : found.start()])
            line = "".join(self._line)
            self._line.clear()
            self._process(line, events)
            start = found.end()
        self._line.append(text[start:])
        self._skip_lf = text.endswith("\r")
        return events

    def _process(self, line: str, events: list[SSEEvent]) -> None:
        if line == "":
            self._dispatch(events)
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value + "\n")
        elif name == "id":
            if "\x00" not in value:
                self._id = value
        elif name == "retry":
            if value and all("0" <= c <= "9" for c in value):
                self.retry = int(value)

    def _dispatch(self, events: list[SSEEvent]) -> None:
        self.last_event_id = self._id
        data = "".join(self._data)
        event_type = self._type
        self._data.clear()
        self._type = ""
        if data == "":
            return
        if data.endswith("\n"):
            data = data[:-1]
        events.append(SSEEvent(event_type or "message", data, self.last_event_id))


class StreamClosed(Exception):
    """The server ended the stream."""


class ChunkError(Exception):
    """The body is not valid HTTP/1.1 chunked framing."""


class SSEClient:
    """One GET of an event stream over a plain socket.

    :param url: ``http://host:port/path?query``.
    :param last_event_id: sent as the ``Last-Event-ID`` header.
    :param headers: more request headers.
    :param timeout: bound of each wait, so a broken test fails instead of hanging.
    :param rcvbuf: ``SO_RCVBUF`` to set before connecting (a slow client).
    :param http10: send an HTTP/1.0 request (the answer is not chunked).
    """

    def __init__(
        self,
        url: str,
        *,
        last_event_id: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 20.0,
        rcvbuf: int | None = None,
        http10: bool = False,
    ) -> None:
        parts = urlsplit(url)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target} HTTP/{'1.0' if http10 else '1.1'}",
            f"Host: {parts.netloc}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
        ]
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.parser = Parser()
        self.pending: list[SSEEvent] = []
        self.eof = False
        self._raw = b""
        self._chunked = False
        self._chunk_left = 0
        #: Chunks of the body read so far.
        self.chunks = 0
        #: The body ended with its last (empty) chunk, not with a closed connection.
        self.finished = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.status, self.headers = self._read_head()
        self.body = b""
        if self.status != 200:
            self.body = self._read_all_raw()
        else:
            self._consume()  # the body that came with the head

    # -- HTTP -------------------------------------------------------------------

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
        return data

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._raw:
            data = self._recv()
            if not data:
                raise StreamClosed(f"Connection closed before the response head: {self._raw!r}")
            self._raw += data
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        return int(status_line.split()[1]), headers

    def _read_all_raw(self) -> bytes:
        length = self.headers.get("content-length")
        while length is not None and len(self._raw) < int(length) or length is None and not self.eof:
            if not self._recv_into_raw():
                break
        return self._raw

    def _recv_into_raw(self) -> bool:
        data = self._recv()
        self._raw += data
        return bool(data)

    def _body_bytes(self) -> bytes:
        """Decode what the raw buffer holds of the body (de-chunking)."""
        if not self._chunked:
            data, self._raw = self._raw, b""
            return data
        out = bytearray()
        while True:
            if self._chunk_left > 0:
                take = self._raw[: self._chunk_left]
                out += take
                self._raw = self._raw[len(take) :]
                self._chunk_left -= len(take)
                if self._chunk_left > 0:
                    break
                self._chunk_left = -2  # the CRLF after the chunk
            if self._chunk_left == -2:
                if len(self._raw) < 2:
                    break
                if self._raw[:2] != b"\r\n":
                    raise ChunkError(f"A chunk is not followed by CR LF: {self._raw[:40]!r}")
                self._raw = self._raw[2:]
                self._chunk_left = 0
            if b"\r\n" not in self._raw:
                if len(self._raw) > 32:
                    raise ChunkError(f"Not a chunk size line: {self._raw[:40]!r}")
                break
            size_line, self._raw = self._raw.split(b"\r\n", 1)
            digits = size_line.split(b";")[0]
            if not digits or any(c not in b"0123456789abcdefABCDEF" for c in digits):
                raise ChunkError(f"Not a chunk size line: {size_line[:40]!r}")
            size = int(digits, 16)
            self.chunks += 1
            if size == 0:
                self.eof = self.finished = True
                break
            self._chunk_left = size
        return bytes(out)

    # -- events -----------------------------------------------------------------

    def _pump(self, deadline: float) -> None:
        """Read once from the socket and parse what arrived."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("No more data from the stream in time.")
        self.sock.settimeout(remaining)
        try:
            data = self._recv()
        except TimeoutError:
            raise TimeoutError("No more data from the stream in time.") from None
        except ConnectionResetError:
            self.eof = True
            data = b""
        self._raw += data
        self._consume()

    def _consume(self) -> None:
        text = self._decoder.decode(self._body_bytes(), final=self.eof)
        self.pending.extend(self.parser.feed(text))

    def next_event(self, timeout: float | None = None) -> SSEEvent:
        """The next dispatched event.

        :raises StreamClosed: the stream ended first.
        :raises TimeoutError: none came within ``timeout``.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            if self.eof:
                raise StreamClosed("The server ended the stream.")
            self._pump(deadline)
        return self.pending.pop(0)

    def take(self, count: int, timeout: float | None = None) -> list[SSEEvent]:
        """The next ``count`` events."""
        return [self.next_event(timeout) for _ in range(count)]

    def wait_until(self, predicate: object, timeout: float | None = None) -> None:
        """Read until ``predicate()`` holds (e.g. a comment or a start id arrived)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not predicate():  # type: ignore[operator]
            if self.eof:
                raise StreamClosed("The server ended the stream.")
            self._pump(deadline)

    def wait_open(self, timeout: float | None = None) -> str:
        """Wait for the stream's first frame (``retry`` and the start id)."""
        self.wait_until(lambda: self.parser.retry is not None, timeout)
        return self.parser.last_event_id

    def read_to_end(self, timeout: float | None = None) -> list[SSEEvent]:
        """Every event until the server ends the stream."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            self._pump(deadline)
        events, self.pending = self.pending, []
        return events

    @property
    def last_event_id(self) -> str:
        return self.parser.last_event_id

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
