"""The Notifications extension."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery import Celery
from flask import Flask, Response, current_app, has_app_context

from . import sending
from .backends.base import Backend, Message, build_backend
from .config import apply_defaults, validate
from .errors import HubError
from .event import Event
from .event_filter import EventFilter
from .event_hub import EventHub, hub_id_for
from .ledger.base import Ledger
from .ledger.choice import build_ledger
from .sending import Dispatch
from .state import Runtime, StreamAuthorizer, current_notifications
from .streaming.notifier import SseNotifier
from .streaming.server import check_at_startup
from .timers.worker import install as install_timers
from .worker.celery_app import celery_for
from .worker.tasks import bind, register_consumer_task

if TYPE_CHECKING:
    from .inbox import Inbox
    from .preferences import Preferences
    from .timers.api import Timers

logger = logging.getLogger(__name__)

__all__ = ["Notifications"]


class Notifications:
    """The Flask-Notifications extension.

    ::

        notifications = Notifications(app)
        # or
        notifications = Notifications()
        notifications.init_app(app, celery=celery, broker=redis)

    Hubs belong to the extension object and are shared by every application
    it is initialised on; the Celery app and the backend are per application.

    :param app: the application, or ``None`` to call :meth:`init_app` later.
    :param celery: the Celery app that runs the consumers; see :meth:`init_app`.
    :param broker: a client for the backend, such as a ``redis.Redis``.
    """

    def __init__(self, app: Flask | None = None, celery: Celery | None = None, broker: Any = None) -> None:
        self._hubs: dict[str, EventHub] = {}
        self._states: weakref.WeakKeyDictionary[Flask, Runtime] = weakref.WeakKeyDictionary()
        #: The function registered with :meth:`stream_authorizer`, if any.
        self.authorizer: StreamAuthorizer | None = None
        if app is not None:
            self.init_app(app, celery=celery, broker=broker)

    def init_app(self, app: Flask, celery: Celery | None = None, broker: Any = None) -> None:
        """Set the extension up on ``app``.

        :param celery: the Celery app to enqueue on. ``None`` reuses the one of
            a Flask-CeleryExt already set up on ``app``, or builds one through
            Flask-CeleryExt from the ``CELERY_*`` config, accepting JSON only.
        :param broker: a client for the backend, such as the ``redis.Redis``
            the documentation passes; ``None`` lets the backend connect from
            the config (``NOTIFICATIONS_REDIS_URL`` or ``REDIS_URL``).
        :raises RuntimeError: the extension is already set up on ``app``.
        :raises ConfigurationError: the configured backend does not exist, or
            a ``NOTIFICATIONS_*`` value has the wrong type, is out of range or
            is a malformed URL (the message names the key and the value), or
            ``celery`` serves another live application with another
            ``Notifications`` object, key prefix or queue.
        """
        if "notifications" in app.extensions:
            raise RuntimeError("Flask-Notifications is already initialised on this application.")
        apply_defaults(app)
        validate(app)
        celery = celery_for(app, self, celery)
        backend = build_backend(app.config["NOTIFICATIONS_BACKEND"], app.config, broker)
        ledger = build_ledger(app, backend, broker)
        self._states[app] = Runtime(self, app, celery, backend, ledger)
        app.extensions["notifications"] = self
        bind(celery, app)
        install_timers(celery, app)
        for hub in self._hubs.values():
            for task_name in hub.consumer_names:
                register_consumer_task(celery, task_name, **hub.task_options(task_name))
        if app.config["NOTIFICATIONS_SSE_BLUEPRINT"]:
            from .streaming.views import blueprint

            check_at_startup()

            app.register_blueprint(blueprint, url_prefix=app.config["NOTIFICATIONS_SSE_URL_PREFIX"])
        if app.config["NOTIFICATIONS_HEALTH_BLUEPRINT"]:
            from .ops.health import blueprint as health

            app.register_blueprint(health, url_prefix=app.config["NOTIFICATIONS_HEALTH_URL_PREFIX"])
        if app.config["NOTIFICATIONS_METRICS"]:
            from .ops.metrics_dir import prepare_multiprocess_dir

            # Before prometheus_client is imported, which reads it once.
            prepare_multiprocess_dir()
            from .ops.metrics import instrument

            instrument(self._states[app])
        _add_cli(app)
        # 0.1 offered the extension to templates.
        app.context_processor(_template_context)

    # -- per-application state ------------------------------------------------

    def _app(self, app: Flask | None = None) -> Flask:
        """``app``, else the current application, else the one application
        the extension is set up on, as 0.1 served it outside any context."""
        if app is not None:
            return app
        if has_app_context():
            found: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            return found
        apps = list(self._states)
        if len(apps) == 1:
            return apps[0]
        raise RuntimeError(
            f"Flask-Notifications is set up on {len(apps)} applications, so it needs an application "
            "context here to know which one. Use it inside a request or 'with app.app_context():', "
            "or pass the app."
        )

    def runtime(self, app: Flask | None = None) -> Runtime:
        """What the extension holds for ``app``, or for the current
        application (or the only one it is set up on): its Celery app,
        backend, stream fan-out, authorization and dead letters.

        :raises RuntimeError: there is no application context and no ``app``
            while the extension serves several applications, or the
            extension is not initialised on it.
        """
        app = self._app(app)
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                "Flask-Notifications is not initialised on this application. Did you forget to call init_app?"
            ) from None

    def get_celery(self, app: Flask | None = None) -> Celery:
        """The Celery app of ``app``, or of the current application."""
        return self.runtime(app).celery

    def get_backend(self, app: Flask | None = None) -> Backend:
        """The pub/sub backend of ``app``, or of the current application."""
        return self.runtime(app).backend

    @property
    def celery(self) -> Celery:
        """The Celery app of the current application (or, outside an
        application context, of the one application it is set up on)."""
        return self.get_celery()

    def get_ledger(self, app: Flask | None = None) -> Ledger:
        """The ledger (claims, idempotency keys, dead letters) of ``app``,
        or of the current application."""
        return self.runtime(app).ledger

    @property
    def ledger(self) -> Ledger:
        """The ledger of the current application (or, outside an
        application context, of the one application it is set up on)."""
        return self.get_ledger()

    @property
    def backend(self) -> Backend:
        """The pub/sub backend of the current application (or, outside an
        application context, of the one application it is set up on)."""
        return self.get_backend()

    @cached_property
    def inbox(self) -> Inbox:
        """Every user's stored notifications; see :doc:`inbox` (needs the
        ``inbox`` extra)."""
        from .inbox import Inbox

        return Inbox(self)

    @cached_property
    def timers(self) -> Timers:
        """The durable timers of :class:`~flask_notifications.consumers.Delayed`
        and :class:`~flask_notifications.consumers.Digest`: cancel, count,
        tick; see :doc:`timers`."""
        from .timers.api import Timers

        return Timers(self)

    @cached_property
    def preferences(self) -> Preferences:
        """What each user wants, per hub and channel; see :doc:`preferences`
        (needs the ``inbox`` extra)."""
        from .preferences import Preferences

        return Preferences(self)

    def create_backend(self) -> Backend:
        """0.1's name for :attr:`backend`. 0.1 built a new backend on each
        call; this returns the one the application's consumers and streams
        use."""
        return self.get_backend()

    @staticmethod
    def root() -> Notifications:
        """The extension of the current application, as
        :data:`~flask_notifications.event_hub.current_notifications` gives it.

        :raises RuntimeError: there is no application context, or the
            extension is not set up on the application.
        """
        found: Notifications = current_notifications._get_current_object()  # type: ignore[attr-defined]
        return found

    # -- hubs -----------------------------------------------------------------

    def create_hub(self, label: str) -> EventHub:
        """Create the hub labelled ``label``, or return it if it exists.

        Creating a hub is idempotent, so an application factory may run more
        than once. Create hubs at import time, with labels that are the same in
        every process: a worker finds the consumers by importing the app.

        :raises HubError: the label is invalid.
        """
        hub_id = hub_id_for(label)
        hub = self._hubs.get(hub_id)
        if hub is None:
            hub = self._hubs[hub_id] = EventHub(label, self)
        return hub

    @property
    def hubs(self) -> dict[str, EventHub]:
        """The hubs by id, in creation order."""
        return dict(self._hubs)

    def get_hub(self, hub_id: str) -> EventHub:
        """The hub with id ``hub_id``.

        :raises HubError: there is no such hub.
        """
        try:
            return self._hubs[hub_id]
        except (KeyError, TypeError):
            raise HubError(f"There is no hub {hub_id!r}; known: {', '.join(self._hubs) or 'none'}.") from None

    def _consumer_added(self, task_name: str, task_options: Mapping[str, Any]) -> None:
        for state in list(self._states.values()):
            register_consumer_task(state.celery, task_name, **task_options)

    # -- sending --------------------------------------------------------------

    def send(self, event: Event | Mapping[str, Any] | str | bytes, *, idempotency_key: str | None = None) -> Dispatch:
        """Validate ``event`` and deliver it to the consumers of every hub whose
        filter it passes, asynchronously, through Celery.

        The whole delivery is one broker message, so a send either enqueues
        everything or raises. Every call is a delivery of its own, with its own
        :attr:`Dispatch.delivery_id`: two events that share an ``event_id`` are
        both delivered. An expired event is not delivered.

        :param event: an :class:`Event`, its dict, or its JSON.
        :param idempotency_key: a key of the caller's; once a send with it has
            been enqueued, a second send with the same key within
            ``NOTIFICATIONS_IDEMPOTENCY_WINDOW`` seconds enqueues nothing and
            returns a :class:`Dispatch` with ``duplicate=True``. While another
            send with the key is still enqueueing, this one waits for it (up
            to ``NOTIFICATIONS_SEND_CLAIM_TIMEOUT`` seconds): it is then a
            duplicate, or, if that send failed, sent. Keys are shared by the
            processes that share a ledger (Redis or SQL) only.
        :raises InvalidEventError: the event is malformed or too large;
            nothing was enqueued.
        :raises BrokerUnavailableError: the broker cannot be reached; nothing
            was enqueued. Send again: when the ledger failed too, the error
            says that the send's record may stay, and the event may then be
            delivered twice, never lost.
        :raises OutboxUnavailableError: the send could not be recorded in
            the outbox; its ``may_be_delivered`` says whether the message
            had already been handed to the broker (docs/reliability.rst).
        :raises BackendError: ``idempotency_key`` was given and the ledger
            cannot be reached; nothing was enqueued.
        :raises SendInProgressError: another send with ``idempotency_key``
            is still in progress after that wait; nothing was enqueued.

        Each call that raises sends :data:`~flask_notifications.signals.send_failed`.
        """
        return sending.send(self, event, idempotency_key=idempotency_key)

    def send_many(self, events: Iterable[Event | Mapping[str, Any] | str | bytes]) -> list[Dispatch]:
        """Validate ``events`` and deliver each one as :meth:`send` would, in
        a single broker message: one process hands events to Celery more
        than ten times faster this way (see docs/performance.rst).

        It is all or nothing, as :meth:`send` is for one event: if any event
        is invalid, or the broker cannot be reached, nothing is enqueued.
        The worker fans the batch out into one task per (event, hub,
        consumer), each retried on its own. Every event is a delivery of its
        own, with its own :attr:`Dispatch.delivery_id`; expired events are
        left out.

        :param events: :class:`Event` objects, their dicts, or their JSON.
        :return: one :class:`Dispatch` per event, in order; those enqueued
            share the batch's ``task_id``.
        :raises InvalidEventError: an event is malformed or too large (the
            message says which); nothing was enqueued.
        :raises BrokerUnavailableError: the broker cannot be reached; nothing
            was enqueued.
        :raises OutboxUnavailableError: the batch could not be recorded in
            the outbox, as for :meth:`send`.

        A call that raises sends :data:`~flask_notifications.signals.send_failed`.
        """
        return sending.send_many(self, events)

    def publish(self, hub: EventHub | str, event: Event | Mapping[str, Any] | str | bytes) -> Message | None:
        """Push ``event`` straight to the stream of ``hub``, through the
        backend, in this process: no Celery, no worker, no consumer. It is
        the flask-sse use case, ``sse.publish(data)``::

            notifications.publish(hub, Event(None, "chat", "Hi", "...", recipients=[user.id]))

        The browsers reading the hub's stream receive it at once, and it
        enters the hub's replay history, as if the hub's
        :class:`~flask_notifications.consumers.push_consumer.PushConsumer`
        had published it; the hub's filter and its other consumers are not
        consulted. Use :meth:`send` for delivery with retries and dead
        letters.

        :param hub: an :class:`EventHub`, its id or its label.
        :param event: an :class:`Event`, its dict, or its JSON.
        :return: the backend's message (its ``id`` is the stream's event id),
            or ``None`` if the event had expired, which publishes nothing.
        :raises HubError: there is no such hub.
        :raises InvalidEventError: the event is malformed or too large.
        :raises BackendError: the backend cannot be reached.
        """
        return sending.push(self, hub, event)

    # -- streams --------------------------------------------------------------

    def flask_sse_notifier(self, hub_id: str, *, event_filter: EventFilter | None = None) -> Response:
        """Answer the current request with the server-sent events stream of
        the hub ``hub_id``, the events its :class:`PushConsumer` publishes::

            @app.route("/my/events")
            @login_required
            def my_events():
                return notifications.flask_sse_notifier(
                    hub.hub_id, event_filter=WithRecipient(current_user.id)
                )

        Each event is a frame whose ``id`` is the backend's message id, whose
        event name is the event's ``event_type`` and whose data is the event's
        JSON. A browser that reconnects sends the last id back
        (``Last-Event-ID``, or ``?last_event_id=`` for clients that cannot set
        headers) and receives what it missed from the history, then live
        events; if the history no longer reaches back to that id, a ``gap``
        event comes first, its data ``{"last_event_id": ..., "oldest_id": ...}``,
        so the client can refetch. See :func:`~flask_notifications.streaming.views.stream_response`
        for the answers given instead of a stream (404, 403, 400, 429, 503).

        :param hub_id: the hub's :attr:`~EventHub.hub_id`.
        :param event_filter: only the events that pass it are streamed, live
            and replayed; combined with what the :meth:`stream_authorizer`
            returns.
        """
        from .streaming.views import stream_response

        return stream_response(self.runtime(), hub_id, event_filter)

    def stream_authorizer(self, func: StreamAuthorizer) -> StreamAuthorizer:
        """Register the function that decides who may read a stream; use it as
        a decorator::

            @notifications.stream_authorizer
            def authorize(hub, request):
                if not current_user.is_authenticated:
                    return False
                if hub.label == "private":
                    return WithRecipient(current_user.id)
                return True

        It is called with the hub and the request before a stream starts,
        and before the endpoint says whether the hub exists: ``False``
        answers ``403 Forbidden``; an :class:`EventFilter` is applied to that
        stream, live and replayed; ``True`` or ``None`` allow it. It may also
        raise an HTTP error, such as ``abort(401)``. Without an authorizer
        every stream is open to anyone (and the blueprint logs a warning,
        unless ``NOTIFICATIONS_SSE_PUBLIC`` says so on purpose).

        :return: ``func``, unchanged.
        """
        if not callable(func):
            raise TypeError(f"stream_authorizer() takes a function, not {type(func).__name__}.")
        self.authorizer = func
        return func

    def stream_stats(self, app: Flask | None = None) -> dict[str, int]:
        """Counters of the event streams this process serves for ``app`` (or
        the current application): open ``connections``, ``subscribers`` of
        live events, ``evicted`` slow clients, ``gaps`` reported and more;
        see :meth:`flask_notifications.streaming.fanout.Fanout.stats`."""
        return self.runtime(app).stream_stats()

    def sse_notifier_for(self, hub_id: str, *, event_filter: EventFilter | None = None) -> SseNotifier:
        """The server-sent events stream of the hub ``hub_id`` outside a
        request, under 0.1's name: iterate it for the bytes of the stream,
        which :meth:`flask_sse_notifier` answers a request with, and close it
        when done::

            with notifications.sse_notifier_for(hub.hub_id) as stream:
                for frame in stream:
                    ...

        It receives the events published from the moment it returns.

        :raises HubError: there is no such hub.
        :raises BackendError: the backend cannot be read.
        """
        runtime = self.runtime()
        hub = self.get_hub(hub_id)
        stream = runtime.fanout.open(hub.hub_id, event_filter=event_filter)
        config = runtime.app.config
        return SseNotifier(
            stream,
            retry=int(config["NOTIFICATIONS_SSE_RETRY"]),
            heartbeat=float(config["NOTIFICATIONS_SSE_HEARTBEAT"]),
        )

    # -- dead letters ---------------------------------------------------------

    def dead_letters(self) -> list[dict[str, Any]]:
        """The failed deliveries kept by the ledger, oldest first."""
        return self.runtime().dead_letters()

    def retry_dead_letter(self, letter_id: str) -> dict[str, Any]:
        """Deliver a dead letter again, with a fresh retry budget and its
        original delivery id, then remove it; see :func:`dead_letters.retry`.

        :raises NotificationsError: there is no such dead letter.
        :raises BrokerUnavailableError: the broker cannot be reached; the dead
            letter is kept.
        """
        return self.runtime().retry_dead_letter(letter_id)


def _template_context() -> dict[str, Any]:
    return {"current_notifications": current_notifications}


def _add_cli(app: Flask) -> None:
    """Add the ``flask notifications`` command group to ``app.cli``."""
    from .cli import notifications_cli

    if notifications_cli.name not in app.cli.commands:
        app.cli.add_command(notifications_cli)
