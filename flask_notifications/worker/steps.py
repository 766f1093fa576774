"""The base of the extension's steps of every ``celery worker``: a thread of
the worker's main process that runs one round of work every few seconds, from
the worker's start to its shutdown (the outbox sweeper, the timer ticker)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from celery import Celery, bootsteps
from kombu.exceptions import OperationalError

from ..errors import BackendError

if TYPE_CHECKING:
    from flask import Flask


class PeriodicStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker step that calls :meth:`once` every :meth:`interval` seconds
    in a thread of its own, and again at once while :meth:`once` says there
    is more to do. A round that fails is logged, and the next one runs after
    the interval.

    Subclasses set :attr:`label`, :attr:`thread_name` and :attr:`failure`,
    and implement :meth:`app_of`, :meth:`interval` and :meth:`once`.
    """

    requires = ("celery.worker.components:Pool",)
    #: The name of the step's thread.
    thread_name = "periodic-step"
    #: A failed round, as the log names it: ``"The outbox sweep"``.
    failure = "A round"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def app_of(self, celery: Celery) -> Flask | None:
        """The application the step works for on ``celery``; ``None`` turns
        the step off."""
        raise NotImplementedError(f"{type(self).__name__} must implement app_of().")

    def interval(self, app: Flask) -> float | None:
        """The seconds between two rounds for ``app``; ``None`` turns the
        step off."""
        raise NotImplementedError(f"{type(self).__name__} must implement interval().")

    def once(self, celery: Celery, app: Flask) -> bool:
        """Run one round; return whether a full batch was done, so that the
        next round runs at once."""
        raise NotImplementedError(f"{type(self).__name__} must implement once().")

    def halt(self) -> None:
        """End the thread after this round, for good."""
        self._stop.set()

    def start(self, parent: Any) -> None:
        app = self.app_of(parent.app)
        interval = self.interval(app) if app is not None else None
        if app is None or interval is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(parent.app, app, interval), name=self.thread_name, daemon=True
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def terminate(self, parent: Any) -> None:
        self.stop(parent)

    def _run(self, celery: Celery, app: Flask, interval: float) -> None:
        wait = interval
        while not self._stop.wait(wait):
            wait = interval
            try:
                if self.once(celery, app):
                    wait = 0.0
            except (BackendError, OperationalError, OSError) as exc:
                self._logger.warning("%s failed (%s); trying again in %s s.", self.failure, exc, interval)
            except Exception:
                self._logger.exception("%s failed; trying again in %s s.", self.failure, interval)

    @property
    def _logger(self) -> logging.Logger:
        # The subclass's module logs its step's failures, as it did before this base.
        return logging.getLogger(type(self).__module__)
