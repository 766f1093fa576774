"""Per-application state: the :class:`Runtime` that the extension holds for
each application, and the one way to reach it.

Code inside a request, a Celery task or an application context reaches the
state through :data:`current_notifications` (the extension) and
:func:`runtime` (what the extension holds for the application). Outside any
context, :meth:`Notifications.runtime` with an application does the same.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Celery
from flask import Flask, Request, current_app, has_app_context
from werkzeug.local import LocalProxy

from . import signals
from .backends.base import Backend
from .errors import BrokerUnavailableError
from .event_filter import EventFilter
from .ledger.base import Ledger
from .streaming.fanout import Fanout
from .worker import dead_letters

if TYPE_CHECKING:
    from .event_hub import EventHub
    from .ext import Notifications

logger = logging.getLogger(__name__)

#: What :meth:`Notifications.stream_authorizer` registers.
StreamAuthorizer = Callable[["EventHub", Request], "bool | EventFilter | None"]


def _current_extension() -> Notifications:
    if not has_app_context():
        raise RuntimeError(
            "current_notifications needs an application context. Use it inside a request, "
            "a Celery task or 'with app.app_context():'."
        )
    try:
        ext: Notifications = current_app.extensions["notifications"]
    except KeyError:
        raise RuntimeError(
            "Flask-Notifications is not set up on the current application. Did you forget to call init_app?"
        ) from None
    return ext


#: The :class:`~flask_notifications.ext.Notifications` extension of the
#: current application.
current_notifications: Notifications = LocalProxy(_current_extension)  # type: ignore[assignment]


def runtime(app: Flask | None = None) -> Runtime:
    """What the extension holds for ``app``, or for the current application.

    :raises RuntimeError: there is no application context and no ``app``, or
        the extension is not set up on the application.
    """
    if app is None:
        return current_notifications.runtime()
    try:
        ext: Notifications = app.extensions["notifications"]
    except KeyError:
        raise RuntimeError(
            f"Flask-Notifications is not set up on the application {app.name!r}. Did you forget to call init_app?"
        ) from None
    return ext.runtime(app)


class Runtime:
    """What the extension holds for one application: its Celery app, its
    backend (the transport), its ledger, the fan-out of its streams in this process, its stream
    authorization and its dead letters. The views, the Celery tasks and the
    CLI are handed this object (:meth:`Notifications.runtime`), as
    Flask-SQLAlchemy hands out ``db.engines`` and ``db.session``.

    :param extension: the :class:`Notifications` it belongs to.
    :param app: the application.
    :param celery: the application's Celery app.
    :param backend: the application's backend: the transport of its events.
    :param ledger: the application's ledger: its claims and dead letters.
    """

    def __init__(self, extension: Notifications, app: Flask, celery: Celery, backend: Backend, ledger: Ledger) -> None:
        self.extension = extension
        # Weak: the extension keys its runtimes by application, weakly.
        self._app = weakref.ref(app)
        self.celery = celery
        self.backend = backend
        self.ledger = ledger
        self._fanout: Fanout | None = None
        self._fanout_lock = threading.Lock()

    @property
    def app(self) -> Flask:
        """The application."""
        app = self._app()
        if app is None:
            raise RuntimeError("The application of this Flask-Notifications runtime no longer exists.")
        return app

    @property
    def fanout(self) -> Fanout:
        """The fan-out of this application's streams in this process,
        started on first use (again in a forked child, as after
        ``gunicorn --preload``)."""
        fanout = self._fanout
        if fanout is None or fanout.pid != os.getpid():
            with self._fanout_lock:
                if self._fanout is None or self._fanout.pid != os.getpid():
                    self._fanout = Fanout(
                        self.backend,
                        on_outage=self._outage,
                        on_recovery=self._recovery,
                        named_events=self.app.config["NOTIFICATIONS_SSE_EVENT_NAMES"],
                        idle_linger=float(self.app.config["NOTIFICATIONS_SSE_IDLE_LINGER"]),
                    )
                fanout = self._fanout
        return fanout

    def _outage(self, exc: BaseException) -> None:
        signals.stream_backend_down.send(self.app, exception=exc)

    def _recovery(self, failures: int) -> None:
        signals.stream_backend_up.send(self.app, failures=failures)

    def stream_stats(self) -> dict[str, int]:
        """The counters of :meth:`Fanout.stats <flask_notifications.streaming.fanout.Fanout.stats>`."""
        return self.fanout.stats()

    def close_streams(self) -> None:
        """End every stream of this process and release its subscription."""
        if self._fanout is not None:
            self._fanout.close()

    @property
    def has_authorizer(self) -> bool:
        """Whether a :meth:`Notifications.stream_authorizer` is registered."""
        return self.extension.authorizer is not None

    def authorize(self, hub: EventHub, request: Request) -> bool | EventFilter:
        """Ask the :meth:`Notifications.stream_authorizer` about a stream.

        :return: ``False`` to refuse it, ``True`` to allow it unfiltered, or
            the filter to apply to it. ``True`` without an authorizer.
        :raises TypeError: the authorizer returned something else.
        """
        authorizer = self.extension.authorizer
        if authorizer is None:
            return True
        verdict = authorizer(hub, request)
        if verdict is None:
            return True
        if isinstance(verdict, bool | EventFilter):
            return verdict
        raise TypeError(
            f"A stream authorizer must return True, False, None or an EventFilter, not {type(verdict).__name__}."
        )

    def dead_letters(self) -> list[dict[str, Any]]:
        """The failed deliveries kept by the ledger, oldest first. Dead
        letters parked on the broker while the ledger was unreachable are
        moved to the ledger first (if the broker answers)."""
        try:
            dead_letters.adopt(self.app, self.celery, self.ledger)
        except BrokerUnavailableError as exc:
            logger.warning("%s; listing the dead letters the ledger keeps.", exc)
        return self.ledger.dead_letters()

    def retry_dead_letter(self, letter_id: str) -> dict[str, Any]:
        """See :meth:`Notifications.retry_dead_letter`."""
        return dead_letters.retry(self.celery, self.ledger, letter_id)

    def __repr__(self) -> str:
        app = self._app()
        return f"<Runtime of {app.name if app is not None else 'a removed app'!r}>"
