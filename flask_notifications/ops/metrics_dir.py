"""The directory where every process of a deployment writes its metrics
(``PROMETHEUS_MULTIPROC_DIR``), set up before ``prometheus_client`` is
imported, since it picks single- or multi-process mode at import.

Without one, each process counts on its own: a prefork Celery worker's port
shows none of the runs of its pool, and each scrape of ``gunicorn -w 2``
shows one worker's share. So when ``NOTIFICATIONS_METRICS`` is on and the
variable is unset, :func:`prepare_multiprocess_dir` exports a directory of
its own, named after the process group, which the processes that a server
forks (gunicorn's workers, a Celery pool) and those started with it share.
``init_app`` calls it; so does the first import of the metrics module in a
gunicorn or ``celery worker`` process (:func:`prepare_at_import`), because
the documented ``from flask_notifications.metrics import make_wsgi_app``
sits at the top of the application's module, before ``init_app`` runs.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from typing import Any

from ..errors import ConfigurationError

logger = logging.getLogger(__name__)

#: The variable prometheus_client reads.
ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> str | None:
    """Export :data:`ENV` unless it is set or too late to set; return it.

    :raises ConfigurationError: under gunicorn, ``prometheus_client`` was
        imported before the extension could set the directory up, so each
        worker would count on its own; or the automatic directory belongs to
        another user.
    """
    path = os.environ.get(ENV)
    if path:
        return path
    if "prometheus_client" in sys.modules:
        if "gunicorn.arbiter" in sys.modules:
            raise ConfigurationError(_too_late("each gunicorn worker would count on its own"))
        return None
    path = automatic_dir()
    os.environ[ENV] = path
    logger.info("Metrics of every process of this process group are kept in %s (%s).", path, ENV)
    return path


def prepare_at_import() -> None:
    """Set the directory up before this package imports ``prometheus_client``
    in a process of a server that forks workers: gunicorn (its master with
    ``--preload``, or a worker) or a ``celery worker`` command. Elsewhere (a
    shell, ``flask run``, a test run) nothing is set here: one process counts
    right on its own, and ``init_app`` decides as documented.

    :raises ConfigurationError: as :func:`prepare_multiprocess_dir`.
    """
    if os.environ.get(ENV) or "prometheus_client" in sys.modules:
        return
    if "gunicorn.arbiter" in sys.modules or _celery_worker_command():
        prepare_multiprocess_dir()


def _celery_worker_command() -> bool:
    """Whether this process runs ``celery ... worker`` and is loading its app."""
    if "celery.bin.celery" not in sys.modules:
        return False
    import click

    context = click.get_current_context(silent=True)
    while context is not None:
        if "worker" in (context.info_name, context.invoked_subcommand):
            return True
        context = context.parent
    return False


def _too_late(consequence: str) -> str:
    return (
        f"NOTIFICATIONS_METRICS: prometheus_client was imported before Flask-Notifications could set up "
        f"{ENV}, so {consequence} and the metrics would under-count. Set {ENV} to an empty directory, "
        "writable by every process, in the environment before gunicorn and the Celery worker start "
        "(see docs/operations.rst)."
    )


def refuse_prefork_per_process(worker: Any) -> None:
    """Stop a prefork Celery ``worker`` (at ``worker_init``) of an
    instrumented application that counts per process: its pool's runs would
    never reach its port. Celery logs what a signal receiver raises and goes
    on, so it exits with ``SystemExit``.
    """
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    if os.environ.get(ENV):
        return
    pool = getattr(worker, "pool_cls", None)
    try:
        pool_cls = get_implementation(pool) if pool is not None else None
    except (KeyError, ImportError, ValueError):
        return
    if isinstance(pool_cls, type) and issubclass(pool_cls, TaskPool):
        error = ConfigurationError(_too_late("the worker's port would show none of the runs of its pool"))
        logger.critical("%s", error)
        raise SystemExit(f"ConfigurationError: {error}")


def automatic_dir() -> str:
    """A directory under the temporary directory, of this user and this
    process group (and the start time of its leader, so that a reused group
    id starts afresh), created if missing.

    :raises ConfigurationError: it exists and is not this user's directory.
    """
    group = os.getpgid(0) if hasattr(os, "getpgid") else os.getpid()
    started = _start_time(group)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    name = f"flask-notifications-metrics-{uid}-{group}" + (f"-{started}" if started else "")
    path = os.path.join(tempfile.gettempdir(), name)
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        raise ConfigurationError(
            f"NOTIFICATIONS_METRICS: {path} is not a directory of this user, so it cannot hold the metrics; "
            f"set {ENV} to an empty directory writable by every process of the deployment."
        )
    return path


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat_file:
            fields = stat_file.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 else None
