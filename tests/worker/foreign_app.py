"""A Celery app that knows nothing of Flask-Notifications, sharing the
broker and the default queue of :mod:`tests.worker.own_app`: the worker a
newcomer starts from a plain ``Celery()`` (issue 23)."""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

REDIS_URL = os.environ.get("FOREIGN_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("FOREIGN_PREFIX", "fn-foreign")

celery = Celery("foreign", broker=REDIS_URL)
celery.conf.update(task_default_queue=os.environ.get("FOREIGN_QUEUE", "celery"), worker_prefetch_multiplier=1)


@worker_ready.connect
def announce(**kwargs: Any) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.sadd(f"{PREFIX}:foreign-ready", os.getpid())
    client.close()
