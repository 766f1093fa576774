"""The Notifications extension."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.app.defaults import NAMESPACES, flatten
from flask import Flask, Request, Response, current_app, has_app_context
from flask_celeryext import FlaskCeleryExt
from flask_celeryext.app import AppContextTask
from kombu.exceptions import OperationalError

from . import dead_letters, signals
from .claims import claim_or_wait, held
from .config import apply_defaults
from .errors import (
    BackendError,
    BrokerUnavailableError,
    HubError,
    InvalidEventError,
    NotificationsError,
    SendInProgressError,
)
from .event import Event
from .event_filter import EventFilter
from .event_hub import EventHub, current_notifications, hub_id_for
from .fanout import Fanout, Stream
from .pubsub.backend import Backend, Claim, build_backend
from .tasks import (
    DISPATCH_MANY_TASK,
    DISPATCH_TASK,
    bind,
    dispatch_expires,
    new_delivery_id,
    register_consumer_task,
    sent_key,
)

if TYPE_CHECKING:
    from .inbox import Inbox

logger = logging.getLogger(__name__)

#: What :meth:`Notifications.stream_authorizer` registers.
StreamAuthorizer = Callable[[EventHub, Request], "bool | EventFilter | None"]


@dataclass(frozen=True)
class Dispatch:
    """What :meth:`Notifications.send` did with an event.

    :param event: the validated event.
    :param hub_ids: the hubs whose filter matched, in creation order.
    :param task_id: the id of the Celery dispatch task, or ``None`` when
        nothing was enqueued (no consumer matched, the event expired, or the
        send was a duplicate).
    :param delivery_id: the id of this send, which every consumer's
        :func:`~flask_notifications.delivery.current_delivery` carries.
    :param duplicate: ``True`` when ``idempotency_key`` was already sent
        within ``NOTIFICATIONS_IDEMPOTENCY_WINDOW``; nothing was enqueued.
    """

    event: Event
    hub_ids: tuple[str, ...]
    task_id: str | None
    delivery_id: str | None = None
    duplicate: bool = False


class Runtime:
    """What the extension holds for one application: its Celery app, its
    backend, the fan-out of its streams in this process, its stream
    authorization and its dead letters. The views, the Celery tasks and the
    CLI are handed this object (:meth:`Notifications.runtime`), as
    Flask-SQLAlchemy hands out ``db.engines`` and ``db.session``.

    :param extension: the :class:`Notifications` it belongs to.
    :param app: the application.
    :param celery: the application's Celery app.
    :param backend: the application's backend.
    """

    def __init__(self, extension: Notifications, app: Flask, celery: Celery, backend: Backend) -> None:
        self.extension = extension
        # Weak: the extension keys its runtimes by application, weakly.
        self._app = weakref.ref(app)
        self.celery = celery
        self.backend = backend
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
                    )
                fanout = self._fanout
        return fanout

    def _outage(self, exc: BaseException) -> None:
        signals.stream_backend_down.send(self.app, exception=exc)

    def _recovery(self, failures: int) -> None:
        signals.stream_backend_up.send(self.app, failures=failures)

    def stream_stats(self) -> dict[str, int]:
        """The counters of :meth:`Fanout.stats <flask_notifications.fanout.Fanout.stats>`."""
        return self.fanout.stats()

    def close_streams(self) -> None:
        """End every stream of this process and release its subscription."""
        if self._fanout is not None:
            self._fanout.close()

    @property
    def has_authorizer(self) -> bool:
        """Whether a :meth:`Notifications.stream_authorizer` is registered."""
        return self.extension._stream_authorizer is not None

    def authorize(self, hub: EventHub, request: Request) -> bool | EventFilter:
        """Ask the :meth:`Notifications.stream_authorizer` about a stream.

        :return: ``False`` to refuse it, ``True`` to allow it unfiltered, or
            the filter to apply to it. ``True`` without an authorizer.
        :raises TypeError: the authorizer returned something else.
        """
        authorizer = self.extension._stream_authorizer
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
        """The failed deliveries kept by the backend, oldest first. Dead
        letters parked on the broker while the backend was unreachable are
        moved to the backend first (if the broker answers)."""
        try:
            dead_letters.adopt(self.app, self.celery, self.backend)
        except BrokerUnavailableError as exc:
            logger.warning("%s; listing the dead letters the backend keeps.", exc)
        return self.backend.dead_letters()

    def retry_dead_letter(self, letter_id: str) -> dict[str, Any]:
        """See :meth:`Notifications.retry_dead_letter`."""
        return dead_letters.retry(self.celery, self.backend, letter_id)

    def __repr__(self) -> str:
        app = self._app()
        return f"<Runtime of {app.name if app is not None else 'a removed app'!r}>"


def _celery_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Celery's settings in a Flask config: ``CELERY_<setting>`` in Celery's
    own names (``CELERY_BROKER_URL``, ``CELERY_TASK_ALWAYS_EAGER``) and the
    old uppercase names Celery still documents (``CELERY_ALWAYS_EAGER``,
    ``BROKER_URL``), as Flask-CeleryExt maps them."""
    known: dict[str, str] = {}
    for name, option in flatten(NAMESPACES):
        known[f"CELERY_{name.upper()}"] = name
        for old in option.old:
            known.setdefault(old.upper(), name)
        if name.startswith("broker_"):
            known.setdefault(name.upper(), name)
    return {known[key]: value for key, value in config.items() if key in known}


def _celery_from_config(app: Flask) -> Celery:
    """A Celery app of its own for ``app``, configured from the Flask config
    (see :func:`_celery_settings`), accepting JSON only."""
    celery = Celery(app.import_name, set_as_current=False, task_cls=AppContextTask)
    config = _celery_settings(app.config)
    config.setdefault("broker_url", app.config.get("REDIS_URL") or "redis://localhost:6379/0")
    config.update(
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    config.setdefault("broker_transport_options", {"socket_connect_timeout": 2})
    celery.conf.update(config)
    celery.flask_app = app
    return celery


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
        self._stream_authorizer: StreamAuthorizer | None = None
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
        :raises ConfigurationError: the configured backend does not exist.
        """
        if "notifications" in app.extensions:
            raise RuntimeError("Flask-Notifications is already initialised on this application.")
        apply_defaults(app)
        if celery is None:
            celeryext = app.extensions.get("flask-celeryext")
            if celeryext is None:
                celeryext = FlaskCeleryExt(app, create_celery_app=_celery_from_config)
            celery = celeryext.celery
        # Flask-CeleryExt's default factory hands out Celery's current_app proxy.
        celery = getattr(celery, "_get_current_object", lambda: celery)()
        _warn_unsafe_serializers(celery)
        backend = build_backend(app.config["NOTIFICATIONS_BACKEND"], app.config, broker)
        self._states[app] = Runtime(self, app, celery, backend)
        app.extensions["notifications"] = self
        bind(celery, app)
        for hub in self._hubs.values():
            for task_name in hub.consumer_names:
                register_consumer_task(celery, task_name, **hub.task_options(task_name))
        if app.config["NOTIFICATIONS_SSE_BLUEPRINT"]:
            from .views import blueprint

            app.register_blueprint(blueprint, url_prefix=app.config["NOTIFICATIONS_SSE_URL_PREFIX"])
        if app.config["NOTIFICATIONS_HEALTH_BLUEPRINT"]:
            from .health import blueprint as health

            app.register_blueprint(health, url_prefix=app.config["NOTIFICATIONS_HEALTH_URL_PREFIX"])
        if app.config["NOTIFICATIONS_METRICS"]:
            from .metrics import instrument

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
        return self._state(app)

    def _state(self, app: Flask | None = None) -> Runtime:
        app = self._app(app)
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                "Flask-Notifications is not initialised on this application. Did you forget to call init_app?"
            ) from None

    def get_celery(self, app: Flask | None = None) -> Celery:
        """The Celery app of ``app``, or of the current application."""
        return self._state(app).celery

    def get_backend(self, app: Flask | None = None) -> Backend:
        """The pub/sub backend of ``app``, or of the current application."""
        return self._state(app).backend

    @property
    def celery(self) -> Celery:
        """The Celery app of the current application (or, outside an
        application context, of the one application it is set up on)."""
        return self.get_celery()

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
            processes of a shared backend (Redis) only.
        :raises InvalidEventError: the event is malformed or too large;
            nothing was enqueued.
        :raises BrokerUnavailableError: the broker cannot be reached; nothing
            was enqueued.
        :raises BackendError: ``idempotency_key`` was given and the backend
            cannot be reached; nothing was enqueued.
        :raises SendInProgressError: another send with ``idempotency_key``
            is still in progress after that wait; nothing was enqueued.

        Each call that raises sends :data:`~flask_notifications.signals.send_failed`.
        """
        app = self._app()
        state = self._state(app)
        try:
            return self._send(app, state, event, idempotency_key)
        except NotificationsError as exc:
            signals.send_failed.send(app, exception=exc)
            raise

    def _send(
        self,
        app: Flask,
        state: Runtime,
        event: Event | Mapping[str, Any] | str | bytes,
        idempotency_key: str | None,
    ) -> Dispatch:
        event = coerce_event(event)
        event_json = event.to_json()
        limit = app.config["NOTIFICATIONS_MAX_EVENT_SIZE"]
        size = len(event_json.encode("utf-8"))
        if limit and size > limit:
            raise InvalidEventError(f"The event is {size} bytes, more than NOTIFICATIONS_MAX_EVENT_SIZE ({limit}).")
        if event.is_expired():
            logger.info("Not sending expired event %s.", event["event_id"])
            return Dispatch(event, (), None)
        delivery_id = new_delivery_id()
        key = None if idempotency_key is None else sent_key(idempotency_key)
        hold = float(app.config["NOTIFICATIONS_SEND_CLAIM_TIMEOUT"])
        if key is not None:
            # Held briefly while this call enqueues; recorded as sent for the
            # whole window only once the dispatch message is on the broker.
            claimed = claim_or_wait(state.backend, key, delivery_id, hold, wait=hold + 0.1)
            if claimed is Claim.DONE:
                logger.info(
                    "Not sending event %s: idempotency key %r was sent already.", event["event_id"], idempotency_key
                )
                return Dispatch(event, (), None, duplicate=True)
            if claimed is Claim.BUSY:
                raise SendInProgressError(
                    f"Another send with idempotency key {idempotency_key!r} is still in progress; "
                    "nothing was enqueued. Try again once it has finished.",
                    idempotency_key or "",
                )
        task_id = None
        with held(state.backend, key or "", delivery_id, hold, needed=key is not None):
            try:
                matched = [hub for hub in self._hubs.values() if hub.matches(event)]
                targets = [[hub.hub_id, name] for hub in matched for name in hub.consumer_names]
                if targets:
                    task_id = self._enqueue(app, state, event, event_json, targets, delivery_id)
            except BaseException:
                if key is not None:
                    _release_key(state.backend, key, delivery_id)
                raise
        if key is not None:
            _record_sent(state.backend, key, delivery_id, float(app.config["NOTIFICATIONS_IDEMPOTENCY_WINDOW"]))
        for hub in matched:
            signals.hub_matched.send(app, event=event, hub=hub)
        hub_ids = tuple(hub.hub_id for hub in matched)
        signals.event_sent.send(app, event=event, hub_ids=hub_ids)
        return Dispatch(event, hub_ids, task_id, delivery_id)

    def _enqueue(
        self, app: Flask, state: Runtime, event: Event, event_json: str, targets: list[list[str]], delivery_id: str
    ) -> str:
        return _publish(
            app,
            state.celery.tasks[DISPATCH_TASK],
            f"event {event['event_id']} was not sent",
            args=(event_json, targets),
            kwargs={"delivery_id": delivery_id},
            expires=dispatch_expires(self, event, targets),
        )

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

        A call that raises sends :data:`~flask_notifications.signals.send_failed`.
        """
        app = self._app()
        state = self._state(app)
        try:
            return self._send_many(app, state, events)
        except NotificationsError as exc:
            signals.send_failed.send(app, exception=exc)
            raise

    def _send_many(
        self, app: Flask, state: Runtime, events: Iterable[Event | Mapping[str, Any] | str | bytes]
    ) -> list[Dispatch]:
        limit = app.config["NOTIFICATIONS_MAX_EVENT_SIZE"]
        hubs = list(self._hubs.values())
        # (event, its JSON, matched hubs or None when expired, targets, delivery id)
        batch: list[tuple[Event, str, list[EventHub] | None, list[list[str]], str | None]] = []
        for index, item in enumerate(events):
            try:
                event = coerce_event(item)
                event_json = event.to_json()
            except InvalidEventError as exc:
                raise InvalidEventError(f"Event {index} of the batch is invalid: {exc}") from exc
            size = len(event_json.encode("utf-8"))
            if limit and size > limit:
                raise InvalidEventError(
                    f"Event {index} of the batch is {size} bytes, more than NOTIFICATIONS_MAX_EVENT_SIZE ({limit})."
                )
            if event.is_expired():
                logger.info("Not sending expired event %s.", event["event_id"])
                batch.append((event, event_json, None, [], None))
                continue
            passed = [hub for hub in hubs if hub.matches(event)]
            targets = [[hub.hub_id, name] for hub in passed for name in hub.consumer_names]
            # One delivery id per event, as send() has one per call: 128
            # random bits in hex, as new_delivery_id() (uuid4) gives, at a
            # sixth of its cost.
            batch.append((event, event_json, passed, targets, os.urandom(16).hex()))
        items = [[event_json, targets, delivery_id] for _, event_json, _, targets, delivery_id in batch if targets]
        expiries = [dispatch_expires(self, event, targets) for event, _, _, targets, _ in batch if targets]
        task_id = self._enqueue_many(app, state, expiries, items)
        dispatches = []
        for event, _, matched, targets, delivery_id in batch:
            if matched is None:  # expired
                dispatches.append(Dispatch(event, (), None))
                continue
            for hub in matched:
                signals.hub_matched.send(app, event=event, hub=hub)
            hub_ids = tuple(hub.hub_id for hub in matched)
            signals.event_sent.send(app, event=event, hub_ids=hub_ids)
            dispatches.append(Dispatch(event, hub_ids, task_id if targets else None, delivery_id))
        return dispatches

    def _enqueue_many(
        self, app: Flask, state: Runtime, expiries: list[datetime | None], items: list[list[Any]]
    ) -> str | None:
        if not items:
            return None
        # The batch lives as long as its longest-lived dispatch.
        expires = None if None in expiries else max(e for e in expiries if e is not None)
        task = state.celery.tasks[DISPATCH_MANY_TASK]
        return _publish(app, task, f"none of the {len(items)} events were sent", args=(items,), expires=expires)

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
        so the client can refetch. See :func:`~flask_notifications.views.stream_response`
        for the answers given instead of a stream (404, 403, 400, 429, 503).

        :param hub_id: the hub's :attr:`~EventHub.hub_id`.
        :param event_filter: only the events that pass it are streamed, live
            and replayed; combined with what the :meth:`stream_authorizer`
            returns.
        """
        from .views import stream_response

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
        self._stream_authorizer = func
        return func

    def stream_stats(self, app: Flask | None = None) -> dict[str, int]:
        """Counters of the event streams this process serves for ``app`` (or
        the current application): open ``connections``, ``subscribers`` of
        live events, ``evicted`` slow clients, ``gaps`` reported and more;
        see :meth:`flask_notifications.fanout.Fanout.stats`."""
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
        """The failed deliveries kept by the backend, oldest first."""
        return self.runtime().dead_letters()

    def retry_dead_letter(self, letter_id: str) -> dict[str, Any]:
        """Deliver a dead letter again, with a fresh retry budget and its
        original delivery id, then remove it; see :func:`dead_letters.retry`.

        :raises NotificationsError: there is no such dead letter.
        :raises BrokerUnavailableError: the broker cannot be reached; the dead
            letter is kept.
        """
        return self.runtime().retry_dead_letter(letter_id)


class SseNotifier:
    """The stream of one hub, as bytes, outside a request; see
    :meth:`Notifications.sse_notifier_for`.

    :param connection: the stream's connection to the process's fan-out.
    :param retry: the reconnection delay sent to the client, in milliseconds.
    :param heartbeat: seconds between heartbeats on an idle stream.
    """

    def __init__(self, connection: Stream, *, retry: int, heartbeat: float) -> None:
        self.connection = connection
        self._frames: Generator[bytes, None, None] = _frames(connection, retry, heartbeat)

    def __iter__(self) -> Iterator[bytes]:
        return self._frames

    def close(self) -> None:
        """End the stream and release its place in the fan-out. Idempotent."""
        self._frames.close()
        self.connection.close()

    def __enter__(self) -> SseNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _frames(connection: Stream, retry: int, heartbeat: float) -> Generator[bytes, None, None]:
    yield from connection.frames(retry=retry, heartbeat=heartbeat)


def _release_key(backend: Backend, key: str, token: str) -> None:
    try:
        backend.release(key, token)
    except BackendError as exc:
        # The hold expires on its own within NOTIFICATIONS_SEND_CLAIM_TIMEOUT.
        logger.warning("Could not free the idempotency key %s (%s); it frees itself shortly.", key, exc)


def _record_sent(backend: Backend, key: str, token: str, window: float) -> None:
    """Record the key as sent for ``window`` seconds, after its enqueue."""
    try:
        recorded = backend.complete(key, token, window)
    except BackendError as exc:
        recorded = False
        logger.warning("The event of idempotency key %s was sent, but its record failed: %s", key, exc)
    if not recorded:
        logger.warning(
            "The event of idempotency key %s was sent, but not recorded as sent: a send with the key once its "
            "hold expires (NOTIFICATIONS_SEND_CLAIM_TIMEOUT) is sent again.",
            key,
        )


def _template_context() -> dict[str, Any]:
    return {"current_notifications": current_notifications}


def _publish(app: Flask, task: Any, what: str, **options: Any) -> str:
    """Put one dispatch message on the broker, as JSON, retrying by
    ``NOTIFICATIONS_PUBLISH_RETRY_POLICY``; return its task id.

    :param what: what the error says was not sent.
    :raises BrokerUnavailableError: the broker cannot be reached.
    """
    try:
        result = task.apply_async(
            serializer="json", retry=True, retry_policy=app.config["NOTIFICATIONS_PUBLISH_RETRY_POLICY"], **options
        )
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailableError(f"Could not reach the Celery broker, so {what}: {exc}") from exc
    return str(result.id)


def coerce_event(event: object) -> Event:
    """Turn what :meth:`Notifications.send` accepts into a validated event.

    :raises InvalidEventError: it is not an event.
    """
    if isinstance(event, Event):
        event.validate()
        return event
    if isinstance(event, (str, bytes, bytearray)):
        return Event.from_json(bytes(event) if isinstance(event, bytearray) else event)
    if isinstance(event, Mapping):
        return Event.from_dict(event)
    raise InvalidEventError(f"send() takes an Event, a dict or a JSON string, not {type(event).__name__}.")


def _add_cli(app: Flask) -> None:
    """Add the ``flask notifications`` command group to ``app.cli``."""
    from .cli import notifications_cli

    if notifications_cli.name not in app.cli.commands:
        app.cli.add_command(notifications_cli)


def _warn_unsafe_serializers(celery: Celery) -> None:
    accepted = {str(item).lower() for item in celery.conf.accept_content or ()}
    if accepted - {"json", "application/json"}:
        logger.warning(
            "The Celery app accepts %s; Flask-Notifications sends JSON only, and accepting "
            "pickle lets whoever reaches the broker run code in your workers.",
            sorted(accepted),
        )
