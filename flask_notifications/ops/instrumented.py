"""The applications whose metrics this process counts, and the bounded
label values of their hubs and consumers (``NOTIFICATIONS_METRICS_MAX_HUBS``):
what :mod:`.metrics` and :mod:`.scrape` read."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from flask import Flask

from ..state import runtime as runtime_of
from .metric_families import OTHER

if TYPE_CHECKING:
    from ..event_hub import EventHub
    from ..ext import Notifications
    from ..state import Runtime

#: The runtimes of the applications with NOTIFICATIONS_METRICS on, in this process.
_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()


def add(runtime: Runtime) -> None:
    """Count the metrics of ``runtime``'s application in this process."""
    _runtimes.add(runtime)


def runtimes() -> list[Runtime]:
    """The runtimes of the instrumented applications, in this process."""
    return list(_runtimes)


class Labels:
    """The bounded label values of one extension's hubs and consumers."""

    def __init__(self, hubs: list[EventHub], limit: int) -> None:
        self.key = _labels_key(hubs)
        self.hubs = {hub.hub_id for hub in hubs[:limit]}
        self.consumers = {name for hub in hubs[:limit] for name in hub.consumer_names}
        self.all_consumers = {name for hub in hubs for name in hub.consumer_names}


_labels: weakref.WeakKeyDictionary[Notifications, Labels] = weakref.WeakKeyDictionary()


def _labels_key(hubs: list[EventHub]) -> tuple[int, ...]:
    return tuple(len(hub.consumer_names) for hub in hubs)


def labels_of(app: Flask) -> Labels:
    """The label values of the hubs and consumers of ``app``'s extension."""
    ext = runtime_of(app).extension
    hubs = list(ext.hubs.values())
    found = _labels.get(ext)
    if found is None or found.key != _labels_key(hubs):
        found = _labels[ext] = Labels(hubs, int(app.config["NOTIFICATIONS_METRICS_MAX_HUBS"]))
    return found


def hub_label(app: Flask, hub_id: str) -> str:
    """The ``hub`` label value of ``hub_id``: itself for the first
    ``NOTIFICATIONS_METRICS_MAX_HUBS`` hubs created, else ``"other"``."""
    return hub_id if hub_id in labels_of(app).hubs else OTHER


def enabled(app: Any) -> bool:
    """Whether ``app`` is an application with ``NOTIFICATIONS_METRICS`` on."""
    return isinstance(app, Flask) and bool(app.config.get("NOTIFICATIONS_METRICS"))
