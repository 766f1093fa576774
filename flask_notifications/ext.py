"""The Notifications extension."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.app.defaults import NAMESPACES, flatten
from flask import Flask, Request, Response, current_app, has_app_context
from flask_celeryext import FlaskCeleryExt
from flask_celeryext.app import AppContextTask
from kombu.exceptions import OperationalError

from . import signals
from .config import apply_defaults
from .errors import BrokerUnavailableError, HubError, InvalidEventError, NotificationsError
from .event import Event
from .event_filter import EventFilter
from .event_hub import EventHub, hub_id_for
from .fanout import Fanout
from .pubsub.backend import Backend, build_backend
from .tasks import DISPATCH_MANY_TASK, DISPATCH_TASK, bind, enqueue, register_consumer_task

logger = logging.getLogger(__name__)

#: What :meth:`Notifications.stream_authorizer` registers.
StreamAuthorizer = Callable[[EventHub, Request], "bool | EventFilter | None"]


@dataclass(frozen=True)
class Dispatch:
    """What :meth:`Notifications.send` did with an event.

    :param event: the validated event.
    :param hub_ids: the hubs whose filter matched, in creation order.
    :param task_id: the id of the Celery dispatch task, or ``None`` when
        nothing was enqueued (no consumer matched, or the event expired).
    """

    event: Event
    hub_ids: tuple[str, ...]
    task_id: str | None


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
                    self._fanout = Fanout(self.backend, on_outage=self._outage, on_recovery=self._recovery)
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

    def dead_letter(self, hub_id: str, task_name: str, event_json: str, attempts: int, error: str, trace: str) -> None:
        """Keep a delivery that failed for the last time as a dead letter, and
        send :data:`~flask_notifications.signals.event_dead_lettered`."""
        self.extension._dead_letter(self.app, hub_id, task_name, event_json, attempts, error, trace)

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
                register_consumer_task(celery, task_name)
        if app.config["NOTIFICATIONS_SSE_BLUEPRINT"]:
            from .views import blueprint

            app.register_blueprint(blueprint, url_prefix=app.config["NOTIFICATIONS_SSE_URL_PREFIX"])
        _add_cli(app)

    # -- per-application state ------------------------------------------------

    def runtime(self, app: Flask | None = None) -> Runtime:
        """What the extension holds for ``app``, or for the current
        application: its Celery app, backend, stream fan-out, authorization
        and dead letters.

        :raises RuntimeError: there is no application context and no ``app``,
            or the extension is not initialised on it.
        """
        return self._state(app)

    def _state(self, app: Flask | None = None) -> Runtime:
        if app is None:
            if not has_app_context():
                raise RuntimeError(
                    "Flask-Notifications needs an application context here. Use it inside a "
                    "request or 'with app.app_context():', or pass the app."
                )
            app = current_app._get_current_object()  # type: ignore[attr-defined]
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
        """The Celery app of the current application."""
        return self.get_celery()

    @property
    def backend(self) -> Backend:
        """The pub/sub backend of the current application."""
        return self.get_backend()

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

    def _consumer_added(self, task_name: str) -> None:
        for state in list(self._states.values()):
            register_consumer_task(state.celery, task_name)

    # -- sending --------------------------------------------------------------

    def send(self, event: Event | Mapping[str, Any] | str | bytes) -> Dispatch:
        """Validate ``event`` and deliver it to the consumers of every hub whose
        filter it passes, asynchronously, through Celery.

        The whole delivery is one broker message, so a send either enqueues
        everything or raises. An expired event is not delivered.

        :param event: an :class:`Event`, its dict, or its JSON.
        :raises InvalidEventError: the event is malformed or too large;
            nothing was enqueued.
        :raises BrokerUnavailableError: the broker cannot be reached; nothing
            was enqueued.
        """
        state = self._state()
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        event = coerce_event(event)
        event_json = event.to_json()
        limit = app.config["NOTIFICATIONS_MAX_EVENT_SIZE"]
        size = len(event_json.encode("utf-8"))
        if limit and size > limit:
            raise InvalidEventError(f"The event is {size} bytes, more than NOTIFICATIONS_MAX_EVENT_SIZE ({limit}).")
        if event.is_expired():
            logger.info("Not sending expired event %s.", event["event_id"])
            return Dispatch(event, (), None)
        matched = [hub for hub in self._hubs.values() if hub.matches(event)]
        targets = [[hub.hub_id, name] for hub in matched for name in hub.consumer_names]
        task_id = None
        if targets:
            task_id = self._enqueue(app, state, event, event_json, targets)
        for hub in matched:
            signals.hub_matched.send(app, event=event, hub=hub)
        hub_ids = tuple(hub.hub_id for hub in matched)
        signals.event_sent.send(app, event=event, hub_ids=hub_ids)
        return Dispatch(event, hub_ids, task_id)

    def _enqueue(self, app: Flask, state: Runtime, event: Event, event_json: str, targets: list[list[str]]) -> str:
        expiration = event["expiration_datetime"]
        task = state.celery.tasks[DISPATCH_TASK]
        try:
            result = task.apply_async(
                args=(event_json, targets),
                serializer="json",
                expires=expiration.astimezone(UTC) if expiration else None,
                retry=True,
                retry_policy=app.config["NOTIFICATIONS_PUBLISH_RETRY_POLICY"],
            )
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailableError(
                f"Could not reach the Celery broker, so event {event['event_id']} was not sent: {exc}"
            ) from exc
        return str(result.id)

    def send_many(self, events: Iterable[Event | Mapping[str, Any] | str | bytes]) -> list[Dispatch]:
        """Validate ``events`` and deliver each one as :meth:`send` would, in
        a single broker message: one process hands events to Celery more
        than ten times faster this way (see docs/performance.rst).

        It is all or nothing, as :meth:`send` is for one event: if any event
        is invalid, or the broker cannot be reached, nothing is enqueued.
        The worker fans the batch out into one task per (event, hub,
        consumer), each retried on its own. Every event is a delivery of its
        own, with an id of its own; expired events are left out.

        :param events: :class:`Event` objects, their dicts, or their JSON.
        :return: one :class:`Dispatch` per event, in order; those enqueued
            share the batch's ``task_id``.
        :raises InvalidEventError: an event is malformed or too large (the
            message says which); nothing was enqueued.
        :raises BrokerUnavailableError: the broker cannot be reached; nothing
            was enqueued.
        """
        state = self._state()
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        limit = app.config["NOTIFICATIONS_MAX_EVENT_SIZE"]
        hubs = list(self._hubs.values())
        batch: list[tuple[Event, list[EventHub] | None, str, list[list[str]]]] = []
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
                batch.append((event, None, event_json, []))
                continue
            passed = [hub for hub in hubs if hub.matches(event)]
            batch.append(
                (event, passed, event_json, [[hub.hub_id, name] for hub in passed for name in hub.consumer_names])
            )
        # One delivery id per event, as send() gives one per call (issue 11):
        # 128 random bits in hex, as uuid4().hex, at a sixth of its cost.
        items = [[event_json, targets, os.urandom(16).hex()] for _, _, event_json, targets in batch if targets]
        task_id = self._enqueue_many(app, state, [event for event, _, _, targets in batch if targets], items)
        dispatches = []
        for event, matched, _, targets in batch:
            if matched is None:  # expired
                dispatches.append(Dispatch(event, (), None))
                continue
            for hub in matched:
                signals.hub_matched.send(app, event=event, hub=hub)
            hub_ids = tuple(hub.hub_id for hub in matched)
            signals.event_sent.send(app, event=event, hub_ids=hub_ids)
            dispatches.append(Dispatch(event, hub_ids, task_id if targets else None))
        return dispatches

    def _enqueue_many(self, app: Flask, state: Runtime, events: list[Event], items: list[list[Any]]) -> str | None:
        if not items:
            return None
        expirations = [event["expiration_datetime"] for event in events]
        # The batch lives as long as its longest-lived event.
        expires = None if None in expirations else max(e.astimezone(UTC) for e in expirations)
        task = state.celery.tasks[DISPATCH_MANY_TASK]
        try:
            result = task.apply_async(
                args=(items,),
                serializer="json",
                expires=expires,
                retry=True,
                retry_policy=app.config["NOTIFICATIONS_PUBLISH_RETRY_POLICY"],
            )
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailableError(
                f"Could not reach the Celery broker, so none of the {len(items)} events were sent: {exc}"
            ) from exc
        return str(result.id)

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

    # -- dead letters ---------------------------------------------------------

    def _dead_letter(
        self, app: Flask, hub_id: str, task_name: str, event_json: str, attempts: int, error: str, trace: str
    ) -> None:
        record = {
            "hub_id": hub_id,
            "consumer": task_name,
            "event": event_json,
            "error": error,
            "traceback": trace,
            "attempts": attempts,
            "failed_at": datetime.now(UTC).isoformat(),
        }
        record["id"] = self.get_backend(app).add_dead_letter(record)
        signals.event_dead_lettered.send(app, dead_letter=record)

    def dead_letters(self) -> list[dict[str, Any]]:
        """The failed deliveries kept by the backend, oldest first."""
        return self.backend.dead_letters()

    def retry_dead_letter(self, letter_id: str) -> dict[str, Any]:
        """Enqueue a dead letter's delivery again, with a fresh retry budget,
        and remove it from the dead letters.

        :raises NotificationsError: there is no such dead letter.
        :raises BrokerUnavailableError: the broker cannot be reached; the dead
            letter is kept.
        """
        state = self._state()
        letter = state.backend.remove_dead_letter(letter_id)
        if letter is None:
            raise NotificationsError(f"There is no dead letter {letter_id!r}.")
        try:
            enqueue(state.celery, letter["consumer"], (letter["hub_id"], letter["event"]))
        except (OperationalError, OSError) as exc:
            state.backend.add_dead_letter({k: v for k, v in letter.items() if k != "id"})
            raise BrokerUnavailableError(f"Could not reach the Celery broker: {exc}") from exc
        return letter


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
