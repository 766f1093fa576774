"""The consumers that record events: to a JSON-lines file, or to a logger.

:class:`LogConsumer` appends one JSON object per line to a file. Several
worker processes (and threads) may append to the same file at once: each
line is written under an exclusive ``flock`` on a descriptor opened with
``O_APPEND``, in one ``write`` when the kernel takes it whole, so lines never
interleave or tear, including lines longer than ``PIPE_BUF``. A write that
fails halfway (a full disk) is cut back, so the file holds whole lines only.

:class:`LoggingConsumer` hands the same line to a :mod:`logging` logger
instead, for applications whose handlers already ship logs somewhere.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import ConsumerError, LogWriteError
from ..event import Event, as_event
from ..streaming.green import call_blocking
from .consumer import EventConsumer

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: O_APPEND alone orders the writes
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Characters that JSON leaves raw but that some readers (``str.splitlines``,
#: JavaScript) take for line ends; they only occur inside JSON strings, where
#: their escapes mean the same.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class LogConsumer(EventConsumer):
    """Append each event to a file, one JSON object per line (JSON lines).

    ::

        hub.register_consumer(LogConsumer("/var/log/myapp/events.log"))

    The file is opened for each event, so a log rotation that moves the file
    away is followed at the next event. A relative path is relative to the
    worker's working directory.

    :param filepath: the file to append to; it is created if missing, but not
        its directory.
    :param mode: the permissions of a file it creates.
    :param fsync: flush every line to the disk before the task completes, so
        a power loss cannot drop an event that was acknowledged.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    """

    def __init__(
        self,
        filepath: str | os.PathLike[str] = "events.log",
        *,
        mode: int = 0o644,
        fsync: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.filepath = os.fspath(filepath)
        self.mode = mode
        self.fsync = fsync

    def format(self, event: Event) -> str:
        """The line written for ``event``, without its newline: the event's
        JSON, UTF-8, with no character any common reader takes for a line
        end. Override it to log something else, on one line."""
        return event.to_json().translate(_LINE_BREAKS)

    def consume(self, event: Event | str) -> None:
        """Append the line of ``event``, an :class:`Event` or its JSON (as
        0.1 called ``LogConsumer(path).consume(event_json)``).

        :raises LogWriteError: the file cannot be opened or written; the
            task is retried.
        :raises ConsumerError: :meth:`format` returned a line break.
        """
        line = self.format(as_event(event))
        if "\n" in line or "\r" in line:
            raise ConsumerError(f"{type(self).__name__}.format() returned a line break; a line must hold one event.")
        self.append((line + "\n").encode("utf-8"))

    def append(self, data: bytes) -> None:
        """Append ``data`` to the file as one unit, under an exclusive lock.

        Waiting for the lock, and ``fsync``, block in the kernel; in a
        process that gevent has monkey-patched (a ``celery worker -P gevent``)
        they run in gevent's threadpool, so the other greenlets of the worker
        keep running meanwhile.

        :raises LogWriteError: the file cannot be opened, locked or written.
        """
        call_blocking(self._append, data)

    def _append(self, data: bytes) -> None:
        path = self.filepath
        try:
            fd = os.open(path, _FLAGS, self.mode)
        except OSError as exc:
            raise LogWriteError(
                f"Cannot open the event log {path!r} for appending: {exc.strerror or exc}. Create its "
                "directory and let the worker's user write there, or give LogConsumer another filepath.",
                path,
            ) from exc
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    # O_APPEND puts each write at the end; the lock keeps other
                    # writers out between the writes of a long line.
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                _truncate(fd, start)
                raise LogWriteError(f"Cannot append to the event log {path!r}: {exc.strerror or exc}.", path) from exc
        except OSError as exc:
            raise LogWriteError(f"Cannot lock the event log {path!r}: {exc.strerror or exc}.", path) from exc
        finally:
            # Closing the descriptor releases the lock.
            os.close(fd)

    def __repr__(self) -> str:
        return f"<LogConsumer {self.name!r} to {self.filepath!r}>"


def _truncate(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        logger.warning("Could not cut a partly written line off the event log (fd %d).", fd, exc_info=True)


class LoggingConsumer(EventConsumer):
    """Log each event's JSON line to a :mod:`logging` logger.

    ::

        hub.register_consumer(LoggingConsumer("myapp.events"))

    The record's message is the event's JSON, and the event's dict is
    attached as the record attribute ``notification_event`` for structured
    handlers. :mod:`logging` swallows the errors of its handlers, so a
    failing handler does not make the task retry.

    :param logger: a logger or the name of one.
    :param level: the level of the records, as a number or a name.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    :raises ConsumerError: the level is not a logging level.
    """

    def __init__(
        self,
        logger: str | logging.Logger = "flask_notifications.events",
        level: int | str = logging.INFO,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        if isinstance(level, str):
            levels = logging.getLevelNamesMapping()
            if level.upper() not in levels:
                raise ConsumerError(f"Unknown logging level {level!r}; use one of {', '.join(levels)}.")
            level = levels[level.upper()]
        self.level = level

    def consume(self, event: Event | str) -> None:
        """Log ``event``, an :class:`Event` or its JSON."""
        event = as_event(event)
        extra: dict[str, Any] = {"notification_event": event.to_dict()}
        self.logger.log(self.level, "%s", event.to_json(), extra=extra)

    def __repr__(self) -> str:
        return f"<LoggingConsumer {self.name!r} to {self.logger.name!r}>"
