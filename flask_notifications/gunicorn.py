"""The gunicorn hooks (:mod:`flask_notifications.ops.gunicorn`) and the worker
class (:mod:`flask_notifications.ops.gunicorn_worker`) under one import path::

    gunicorn -k flask_notifications.gunicorn.GeventWorker ...

    # gunicorn.conf.py
    from flask_notifications.gunicorn import child_exit, post_worker_init

The worker class is loaded on first use: gunicorn's gevent worker imports
``ssl``, which the hooks, imported in gunicorn's master, must not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ops.gunicorn import child_exit, post_worker_init

if TYPE_CHECKING:
    from .ops.gunicorn_worker import GeventWorker

__all__ = ["GeventWorker", "child_exit", "post_worker_init"]


def __getattr__(name: str) -> Any:
    if name == "GeventWorker":
        from .ops.gunicorn_worker import GeventWorker

        return GeventWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
