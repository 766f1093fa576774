"""The browser client that the blueprint serves, and the template helpers
that put it on a page.

The files live in ``streaming/static/`` and are served as they are, with no
build step: ``notifications.js`` (an ES module; also the script of the
``SharedWorker`` that lets every tab share one connection),
``notifications.d.ts`` (its TypeScript declarations) and
``notification-bell.js`` (the ``<notification-bell>`` element). See
docs/client.rst.

With ``NOTIFICATIONS_SSE_BLUEPRINT`` on, every template can call:

- ``notifications_client_url(filename="notifications.js")``: the URL of a file;
- ``notifications_client_scope()``: the scope of the current user (see
  :func:`client_scope`);
- ``notifications_client_script(hubs, ...)``: a ``<script type="module">``
  that connects to the hubs and sets ``window.notifications``;

and import the ``<notification-bell>`` macro::

    {% from "notifications/bell.html" import notification_bell %}
    {{ notification_bell("Inbox") }}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from typing import Any

from flask import current_app, request, url_for
from markupsafe import Markup

#: The files of the client, in ``streaming/static/``.
CLIENT_FILES = ("notifications.js", "notifications.d.ts", "notification-bell.js")


def client_url(filename: str = "notifications.js") -> str:
    """The URL of a file of the browser client, served by the blueprint.

    :param filename: one of :data:`CLIENT_FILES`.
    :raises ValueError: it is not a file of the client.
    """
    if filename not in CLIENT_FILES:
        raise ValueError(f"{filename!r} is not a file of the browser client; choose one of {', '.join(CLIENT_FILES)}.")
    return url_for("notifications.static", filename=filename)


#: The key of the scopes when the application has no ``SECRET_KEY``: then
#: two processes give one user two scopes (never one scope to two users).
_PROCESS_KEY = secrets.token_bytes(32)


def client_scope() -> str:
    """The scope of the current request's user: tabs share a connection only
    if their scopes are equal, so that two users of one browser never share
    one.

    It is an HMAC (by the application's ``SECRET_KEY``) of who the request
    is: the Flask-Login user's id when Flask-Login is set up, else the
    request's credentials (its ``Cookie`` and ``Authorization`` headers), so
    a login, a logout or any new cookie gives a new scope.
    """
    identity = None
    if "login_manager" in current_app.extensions or hasattr(current_app, "login_manager"):
        from flask_login import current_user

        if getattr(current_user, "is_authenticated", False):
            identity = "user " + str(current_user.get_id())
    if identity is None:
        identity = "credentials " + json.dumps(
            [request.headers.get("Cookie", ""), request.headers.get("Authorization", "")]
        )
    secret = current_app.secret_key
    key = secret.encode() if isinstance(secret, str) else secret if isinstance(secret, bytes) else _PROCESS_KEY
    return hmac.new(key, b"flask-notifications scope\0" + identity.encode(), hashlib.sha256).hexdigest()[:32]


def _script_json(value: Any) -> str:
    # Inside <script>, "</" and "<!--" would end or change the element.
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def client_script(
    hubs: Iterable[str] = (),
    *,
    scope: str | None = None,
    name: str = "notifications",
    nonce: str | None = None,
    shared: bool = True,
) -> Markup:
    """A ``<script type="module">`` that connects the page to ``hubs`` over
    one multiplexed stream (shared by the browser's tabs) and sets
    ``window[name]`` to the client, for the page's own scripts (module
    scripts that come after it run after it).

    :param hubs: the labels (or ids) of the hubs to follow; more can be
        added later with ``client.subscribe(hub)``.
    :param scope: what tabs must have in common to share a connection,
        besides the origin; by default :func:`client_scope`, so that tabs of
        two users (after a logout) never share one.
    :param name: the global the client is set to.
    :param nonce: the ``nonce`` attribute, for a Content-Security-Policy.
    :param shared: ``False`` opens one connection per tab.
    """
    options: dict[str, Any] = {
        "url": url_for("notifications.multiplexed_events"),
        "hubs": list(hubs),
        "shared": shared,
    }
    options["scope"] = client_scope() if scope is None else str(scope)
    nonce_attr = Markup(' nonce="{}"').format(nonce) if nonce else Markup("")
    code = (
        f"import {{ connect }} from {_script_json(client_url())};\n"
        f"window[{_script_json(name)}] = connect({_script_json(options)});"
    )
    return Markup('<script type="module"{}>{}</script>').format(nonce_attr, Markup(code)) + Markup("\n")
