"""Whether the server can hold an event stream open without freezing.

A stream holds its request for as long as the browser stays. gunicorn's
default ``sync`` worker serves one request at a time, so one open stream
freezes the whole worker until gunicorn kills it (``WORKER TIMEOUT``), over
and over; ``gthread`` and waitress freeze once their few threads each hold a
stream. Such a server gets a clear refusal instead (:func:`refusal`), logged
once per process, at start-up when it can be told (:func:`check_at_startup`).

It also finds what the server offers of the client's connection
(:func:`client_socket`, :func:`client_fd`), which lets a stream end at once
when it is evicted and notice a client that hangs up.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

from .green import under_gevent

logger = logging.getLogger(__name__)

#: What to run instead, in every refusal.
ADVICE = (
    "Serve event streams with an asynchronous worker: gunicorn -k flask_notifications.gunicorn.GeventWorker "
    "(or gunicorn -k gevent; pip install '.[server]'), whose greenlets hold thousands of open streams "
    "(see docs/deployment.rst)."
)

_logged = False
_lock = threading.Lock()


def _green() -> bool:
    if under_gevent():
        return True
    eventlet = sys.modules.get("eventlet.patcher")
    return bool(eventlet is not None and eventlet.is_monkey_patched("socket"))


def refusal(environ: Mapping[str, Any]) -> str | None:
    """Why the server of ``environ`` cannot hold a stream open, or ``None``
    when it can (a gevent or eventlet worker, the threaded development server,
    or a server this does not know)."""
    if _green():
        return None
    software = str(environ.get("SERVER_SOFTWARE", "")).lower()
    threaded = bool(environ.get("wsgi.multithread"))
    if software.startswith("gunicorn"):
        kind = "gthread" if threaded else "sync"
        return f"gunicorn's {kind} worker holds one request per {'thread' if threaded else 'process'}"
    if software.startswith("waitress"):
        return "waitress holds one request per thread of its small pool"
    if software.startswith("werkzeug") and not threaded:
        return "the development server runs without threads (threaded=False)"
    return None


def log_once(reason: str) -> None:
    """Log ``reason`` and the advice, the first time in this process."""
    global _logged
    with _lock:
        if _logged:
            return
        _logged = True
    logger.error(
        "Event streams are refused in this process: %s, so one open stream would freeze it. %s", reason, ADVICE
    )


def check_at_startup() -> None:
    """Log the refusal at start-up when this process is a gunicorn worker
    (or master, with ``--preload``) of the ``sync`` or ``gthread`` class."""
    if "gunicorn.arbiter" not in sys.modules or _green() or "gunicorn.workers.ggevent" in sys.modules:
        return
    for module, kind in (("gunicorn.workers.gthread", "gthread"), ("gunicorn.workers.sync", "sync")):
        if module in sys.modules:
            log_once(f"gunicorn's {kind} worker holds one request per {'thread' if kind == 'gthread' else 'process'}")
            return


#: Where werkzeug's development server and gunicorn expose the connection.
_SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket")


def client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The client's socket, where the server exposes it (werkzeug's
    development server and gunicorn do; gevent.pywsgi does not)."""
    for key in _SOCKET_KEYS:
        found = environ.get(key)
        if isinstance(found, socket.socket):
            return found
    return None


def client_fd(environ: Mapping[str, Any]) -> int | None:
    """The descriptor of the client's connection, to watch for a hang-up,
    or ``None`` if the server does not tell it."""
    sock = client_socket(environ)
    if sock is not None:
        return sock.fileno()
    try:
        # gevent.pywsgi reads the request through a file made from the socket.
        return int(environ["wsgi.input"].rfile.fileno())
    except (AttributeError, KeyError, OSError, TypeError, ValueError):
        return None
