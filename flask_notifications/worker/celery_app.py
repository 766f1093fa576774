"""The Celery app of an application: built from its ``CELERY_*`` config
when the application brings none, JSON only."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.app.defaults import NAMESPACES, flatten
from flask import Flask
from flask_celeryext.app import AppContextTask

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
