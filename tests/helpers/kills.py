"""What the tests that kill a broker or a worker under load share: a sender
of events at a steady rate, a supervisor that restarts a worker that exits
(as systemd or supervisord would), and a wait that lasts while the worker
makes progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask_notifications import Event
from flask_notifications.errors import BackendError, BrokerUnavailableError
from tests.helpers.processes import WorkerProcess


class SteadySends(threading.Thread):
    """``notifications.send()`` of one event after another at ``rate`` a
    second, in ``app``'s context, until :meth:`stop`: the delivery id of
    every send that returned in :attr:`sent`, the refused ones counted."""

    def __init__(self, app: Any, notifications: Any, rate: float) -> None:
        super().__init__(daemon=True)
        self.app, self.notifications, self.rate = app, notifications, rate
        self.sent: list[str] = []
        self.refused = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        with self.app.app_context():
            seq = 0
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    dispatch = self.notifications.send(Event(None, "outbox", f"event {seq}", "body", seq=seq))
                except (BrokerUnavailableError, BackendError):
                    self.refused += 1
                else:
                    self.sent.append(str(dispatch.delivery_id))
                seq += 1
                time.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stopping.set()
        self.join()


class Supervisor(threading.Thread):
    """Starts ``worker`` again whenever it has exited (kombu may end a worker
    that loses its broker); the exit codes in :attr:`restarts`."""

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.restarts: list[int] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(0.2):
            proc = self.worker.proc
            if proc is not None and proc.poll() is not None:
                self.restarts.append(proc.returncode)
                self.worker.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join()


def wait_while_progressing(done: Callable[[], bool], progress: Callable[[], object], stall: float) -> bool:
    """Wait until ``done()``, as long as ``progress()`` changes at least
    every ``stall`` seconds; return whether it is done."""
    last, since = progress(), time.monotonic()
    while not done():
        time.sleep(1)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall:
            return False
    return True
