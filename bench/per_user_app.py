"""flask-notifications serving per-user streams, as docs/security.rst shows:
the stream authorizer returns ``WithRecipient(user)`` for the user the
request names, so each stream passes only its own user's events.

The user comes from the ``bench_user`` cookie (the session cookie of a real
site); a request without one streams the hub unfiltered (the broadcast phase
of the many-streams run). ``BENCH_HUBS`` more hubs, ``h0`` .. ``h<n-1>``,
serve the many-hubs run. The backend and its keys come from the
environment, as in :mod:`bench.ours_app`.
"""

from __future__ import annotations

import os

from flask import Request

from bench.ours_app import make_app
from flask_notifications.event_filter import EventFilter
from flask_notifications.event_hub import EventHub
from flask_notifications.filters.with_recipient import WithRecipient

#: The cookie that names the user of a stream.
COOKIE = "bench_user"

app, notifications, hubs = make_app()
for number in range(int(os.environ.get("BENCH_HUBS", "0"))):
    notifications.create_hub(f"h{number}")


@notifications.stream_authorizer
def authorize(hub: EventHub, request: Request) -> EventFilter | bool:
    user = request.cookies.get(COOKIE)
    return WithRecipient(user) if user else True
