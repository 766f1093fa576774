"""Liveness and readiness endpoints, for a load balancer or a Kubernetes
probe: the opt-in blueprint registered when ``NOTIFICATIONS_HEALTH_BLUEPRINT``
is true, at ``NOTIFICATIONS_HEALTH_URL_PREFIX`` (``/health``).

``GET <prefix>/live``
    ``200 ok`` while the process answers requests at all. It checks nothing
    else, so a backend outage never gets healthy processes restarted.
``GET <prefix>/ready``
    ``200 ready`` when this process can serve streams and sends: the backend
    and the ledger answer a ping, the Celery broker accepts a connection, and, if streams
    are open, the stream listener holds its subscription and reads the
    backend. ``503 unavailable`` otherwise, and from the moment the process
    stops serving (:meth:`~flask_notifications.streaming.fanout.Fanout.end_streams`),
    so the load balancer sends nothing more its way.

Both answer plain text with no detail (which check failed is logged, not
shown), carry ``Cache-Control: no-store``, and ask for no authentication:
no ``stream_authorizer`` applies to them. A check costs one backend round
trip, one ledger round trip and one broker connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import Blueprint, Response

from ..state import runtime

if TYPE_CHECKING:
    from ..state import Runtime

logger = logging.getLogger(__name__)

#: The blueprint registered when ``NOTIFICATIONS_HEALTH_BLUEPRINT`` is true.
blueprint = Blueprint("notifications_health", __name__)


def _answer(ok: bool, text: str) -> Response:
    return Response(
        text if ok else "unavailable",
        status=200 if ok else 503,
        content_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


@blueprint.get("/live")
def live() -> Response:
    """The process answers."""
    return _answer(True, "ok")


@blueprint.get("/ready")
def ready() -> Response:
    """Whether this process can serve; see :func:`unready_reason`."""
    reason = unready_reason(runtime())
    if reason is not None:
        logger.warning("Not ready: %s.", reason)
    return _answer(reason is None, "ready")


def unready_reason(runtime: Runtime) -> str | None:
    """Why the process of ``runtime`` cannot serve now, or ``None`` when it can.

    :return: ``"stopping"``, ``"backend unreachable"``, ``"ledger
        unreachable"``, ``"broker
        unreachable: ..."``, ``"stream listener not running"`` or
        ``"stream listener cannot read the backend"``.
    """
    fanout = runtime.fanout
    if fanout.ending:
        return "stopping"
    if not runtime.backend.ping():
        return "backend unreachable"
    if not runtime.ledger.ping():
        return "ledger unreachable"
    celery = runtime.celery
    if not celery.conf.task_always_eager:
        try:
            with celery.connection_for_write(connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=0)
        except Exception as exc:
            return f"broker unreachable: {exc!r}"
    stats = fanout.stats()
    if stats["subscribers"] and not stats["listening"]:
        return "stream listener not running"
    if stats["backend_down"]:
        return "stream listener cannot read the backend"
    return None
