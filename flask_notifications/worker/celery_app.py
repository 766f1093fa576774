"""The Celery app of an application: built from its ``CELERY_*`` config
when the application brings none, JSON only; and the queue of its own that
this extension's tasks go to, which that app's workers consume."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.app.defaults import NAMESPACES, flatten
from celery.signals import worker_ready
from flask import Flask
from flask_celeryext import FlaskCeleryExt
from flask_celeryext.app import AppContextTask
from kombu.entity import Queue

from ..errors import ConfigurationError
from .messages import DELIVERY_HEADER, DISPATCH_MANY_TASK, DISPATCH_TASK

logger = logging.getLogger(__name__)


def celery_settings(config: Mapping[str, Any]) -> dict[str, Any]:
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


def celery_from_config(app: Flask) -> Celery:
    """A Celery app of its own for ``app``, configured from the Flask config
    (see :func:`celery_settings`), accepting JSON only."""
    celery = Celery(app.import_name, set_as_current=False, task_cls=AppContextTask)
    config = celery_settings(app.config)
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


def warn_unsafe_serializers(celery: Celery) -> None:
    """Log a warning when ``celery`` accepts content other than JSON, which
    this extension never sends."""
    accepted = {str(item).lower() for item in celery.conf.accept_content or ()}
    others = sorted(accepted - {"json", "application/json"})
    if not others:
        return
    risk = (
        "accepting pickle lets whoever reaches the broker run code in your workers"
        if any("pickle" in item for item in others)
        else "accepting more formats than it needs only widens what a broker message can carry"
    )
    logger.warning(
        "The Celery app accepts %s besides JSON; Flask-Notifications sends JSON only, and %s. "
        "Set accept_content=['json'] unless other tasks need them.",
        others,
        risk,
    )


class QueueRouter:
    """A Celery router (an entry of ``task_routes``) that sends this
    extension's tasks to ``queue``: the dispatch tasks, and the consumer
    tasks (their messages carry :data:`DELIVERY_HEADER`). A worker started
    from another Celery app listens on ``celery`` and never sees them, so it
    cannot drop them as unregistered. A ``queue`` given to
    ``register_consumer`` still wins.

    :param queue: the queue's name.
    """

    def __init__(self, queue: str) -> None:
        self.queue = queue

    def __call__(
        self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any], task: Any = None, **extra: Any
    ) -> dict[str, str] | None:
        headers = options.get("headers") or {}
        if name in (DISPATCH_TASK, DISPATCH_MANY_TASK) or DELIVERY_HEADER in headers:
            return {"queue": self.queue}
        return None

    def __repr__(self) -> str:
        return f"QueueRouter({self.queue!r})"


def use_own_queue(celery: Celery, queue: str) -> None:
    """Route this extension's tasks to ``queue`` and declare it in
    ``celery``'s ``task_queues``, next to the default queue, so that a worker
    of ``celery`` started without ``-Q`` consumes both (``celery -A
    app:celery worker``). A worker given ``-Q`` must list it.
    """
    conf = celery.conf
    routes = conf.task_routes
    if isinstance(routes, (list, tuple)):
        routers = [route for route in routes if not isinstance(route, QueueRouter)]
    else:
        routers = [] if routes is None else [routes]
    # After the application's own routes, so that one it gives for these tasks wins.
    conf.update(task_routes=(*routers, QueueRouter(queue)))
    declare_queue(celery, queue)
    _own_queues[celery] = queue
    worker_ready.connect(_check_worker_queues, weak=False, dispatch_uid="flask_notifications.worker_queues")


def declare_queue(celery: Celery, queue: str) -> None:
    """Add ``queue`` to ``celery``'s ``task_queues``, next to the default
    queue, so that a worker of ``celery`` started without ``-Q`` consumes
    both."""
    conf = celery.conf
    queues = conf.task_queues
    if isinstance(queues, Mapping):
        if queue not in queues:
            conf.task_queues = {**queues, queue: {"routing_key": queue}}
    elif queues:
        if queue not in {item.name for item in queues}:
            conf.task_queues = [*queues, Queue(queue, routing_key=queue)]  # type: ignore[no-untyped-call]
    elif queue != conf.task_default_queue:
        conf.task_queues = [
            Queue(  # type: ignore[no-untyped-call]
                conf.task_default_queue,
                exchange=celery.amqp.default_exchange,
                routing_key=conf.task_default_routing_key,
            ),
            Queue(queue, routing_key=queue),  # type: ignore[no-untyped-call]
        ]
    if queue not in celery.amqp.queues:
        # The queues may have been read before init_app: read them again.
        celery.amqp.queues = conf.task_queues


#: The queue of this extension's tasks, per Celery app.
_own_queues: weakref.WeakKeyDictionary[Celery, str] = weakref.WeakKeyDictionary()


def _check_worker_queues(sender: Any = None, **kwargs: Any) -> None:
    """At a worker's start: a worker of the application that does not consume
    the extension's queue (started with ``-Q`` that leaves it out) would never
    run a dispatch or a consumer, and the events would wait there unseen; say
    so, with the option that fixes it."""
    celery = getattr(sender, "app", None)
    queue = _own_queues.get(celery) if celery is not None else None
    consumer = getattr(sender, "task_consumer", None)
    if queue is None or consumer is None:
        return
    consumed = [item.name for item in getattr(consumer, "queues", ())]
    if queue not in consumed:
        logger.error(
            "This worker consumes %s but not %r, the queue of Flask-Notifications' dispatch and consumer tasks: "
            "events sent meanwhile wait there until a worker consumes it. Start the worker with -Q %s "
            "(or without -Q), or set NOTIFICATIONS_CELERY_QUEUE to a queue it consumes.",
            ", ".join(repr(name) for name in consumed) or "no queue",
            queue,
            ",".join([*consumed, queue]),
        )


class _CeleryCommandHint:
    """What ``celery -A module worker`` finds as ``user_options`` when it
    takes the module's Flask application for its Celery app (Celery looks for
    ``app`` before ``celery``): an error that says what to type instead of
    ``AttributeError: 'Flask' object has no attribute 'user_options'``."""

    def __init__(self, module: str) -> None:
        self.module = module

    def get(self, *args: Any) -> Any:
        import click

        raise click.UsageError(
            f"'celery -A {self.module}' found the Flask application {self.module}.app, not its Celery app. "
            f"Run 'celery -A {self.module}:celery worker', where the module defines "
            "celery = notifications.get_celery(app)."
        )


def hint_celery_command(app: Flask) -> None:
    """Make ``celery -A module worker``, which takes ``module.app`` (the
    Flask application) for the Celery app, fail with the command to type."""
    if not hasattr(app, "user_options"):
        module = app.import_name if app.import_name != "__main__" else "app"
        setattr(app, "user_options", _CeleryCommandHint(module))  # noqa: B010 (Flask declares no such attribute)


def celery_for(app: Flask, ext: object, celery: Celery | None = None) -> Celery:
    """The Celery app that runs the extension ``ext``'s tasks for ``app``:
    ``celery``, else the one of a Flask-CeleryExt already set up on ``app``,
    else one built through Flask-CeleryExt from the ``CELERY_*`` config,
    accepting JSON only. It is taken for ``app`` and routes the extension's
    tasks to its own queue.

    :raises ConfigurationError: ``celery`` serves another live application
        with another ``Notifications`` object, key prefix or queue.
    """
    if celery is None:
        celeryext = app.extensions.get("flask-celeryext")
        if celeryext is None:
            celeryext = FlaskCeleryExt(app, create_celery_app=celery_from_config)
        celery = celeryext.celery
    # Flask-CeleryExt's default factory hands out Celery's current_app proxy.
    celery = getattr(celery, "_get_current_object", lambda: celery)()
    warn_unsafe_serializers(celery)
    queue = app.config["NOTIFICATIONS_CELERY_QUEUE"] or app.config["NOTIFICATIONS_KEY_PREFIX"]
    _claim_celery(celery, ext, app, queue)
    use_own_queue(celery, queue)
    hint_celery_command(app)
    return celery


#: The application each Celery app runs this extension's tasks for, with the
#: extension (its hubs), key prefix and queue: one Celery app has one router
#: and binds one application.
_celery_owners: weakref.WeakKeyDictionary[Celery, tuple[weakref.ref[Flask], weakref.ref[Any], str, str]] = (
    weakref.WeakKeyDictionary()
)


def _claim_celery(celery: Celery, ext: object, app: Flask, queue: str) -> None:
    """Take ``celery`` for ``app``, unless another live application set up
    on it has another extension object (so other hubs), key prefix or queue.
    An application nothing refers to any more does not count.

    :raises ConfigurationError: it has; the dispatches of ``app`` would go
        to the other's queue, and its worker would run them with the other
        application's hubs, backend and keys.
    """
    prefix = app.config["NOTIFICATIONS_KEY_PREFIX"]
    owner = _celery_owners.get(celery)

    def conflict() -> Flask | None:
        if owner is None:
            return None
        other = owner[0]()
        if other is None or other is app or (owner[1]() is ext and owner[2:] == (prefix, queue)):
            return None
        return other

    if conflict() is not None:
        gc.collect()
    other = conflict()
    if owner is not None and other is not None:
        hubs = "the same Notifications object" if owner[1]() is ext else "another Notifications object (other hubs)"
        raise ConfigurationError(
            f"The Celery app {celery.main!r} already runs Flask-Notifications for the application "
            f"{other.import_name!r}, with {hubs}, NOTIFICATIONS_KEY_PREFIX {owner[2]!r} and queue {owner[3]!r}. "
            "One Celery app routes to one queue and its worker runs every dispatch with one application, so the "
            f"events of {app.import_name!r} (NOTIFICATIONS_KEY_PREFIX {prefix!r}, queue {queue!r}) would go to the "
            "other's queue and be delivered with its hubs, backend and keys. Give each application its own Celery "
            "app (init_app without celery= builds one from the application's CELERY_* config), or set them up with "
            "one Notifications object and the same NOTIFICATIONS_KEY_PREFIX and NOTIFICATIONS_CELERY_QUEUE."
        )
    _celery_owners[celery] = (weakref.ref(app), weakref.ref(ext), prefix, queue)
