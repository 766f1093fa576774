"""The rules the package's JSON blueprints share (the inbox's, the
preferences' and Web Push's): the current user, found by the inbox's
:meth:`~flask_notifications.inbox.Inbox.user_loader` (or Flask-Login);
POSTs from the application's own pages only, with a bounded JSON body; and
errors answered as ``{"error": message}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    RequestEntityTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)

from ..state import current_notifications

#: Largest body a POST may have, in bytes: 1,000 ids take about 20 KiB.
MAX_BODY_SIZE = 64 * 1024
#: Deepest nesting of lists and objects a body may have; ``{"ids": [1]}`` has 2.
MAX_BODY_DEPTH = 16


def current_user(refused: str) -> str:
    """The recipient id of the request's user.

    :param refused: the message of the ``401`` when no user is logged in.
    :raises Unauthorized: no user is logged in.
    """
    user = current_notifications.inbox.current_user_id()
    if user is None:
        raise Unauthorized(refused)
    return user


def same_origin() -> bool:
    """Whether the request comes from the application's own pages (its
    ``Sec-Fetch-Site`` and ``Origin`` headers, when sent, say so)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == request.host_url.rstrip("/")


def read_body() -> Any:
    """The POST's JSON body; an empty body is ``{}``.

    :raises RequestEntityTooLarge: it is larger than :data:`MAX_BODY_SIZE`.
    :raises BadRequest: it is not JSON, or nested too deep to parse.
    """
    too_large = RequestEntityTooLarge(f"The body is larger than {MAX_BODY_SIZE // 1024} KiB.")
    if request.content_length is not None and request.content_length > MAX_BODY_SIZE:
        raise too_large
    request.max_content_length = MAX_BODY_SIZE
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large from None
    if len(data) > MAX_BODY_SIZE:  # read before this limit was set
        raise too_large
    if not data.strip():
        return {}
    try:
        body = current_app.json.loads(data)
    except (ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's stack.
        raise BadRequest("The body is not valid JSON.") from None
    if _too_deep(body, MAX_BODY_DEPTH):
        raise BadRequest(f"The body is nested deeper than {MAX_BODY_DEPTH} levels.")
    return body


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects deeper than ``limit``
    (without recursion, so that no depth overflows the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    """The answer ``{"error": message, **extra}`` with ``status``."""
    return jsonify(error=message, **extra), status


def json_api(
    blueprint: Blueprint,
    *,
    cross_site: str,
    invalid: type[Exception],
    unavailable: tuple[type[Exception], str],
    body: str | None = None,
) -> None:
    """Give ``blueprint`` the shared rules: refuse cross-site POSTs (a
    cross-site form cannot send JSON, and a cross-site ``fetch`` with JSON
    needs a CORS preflight these blueprints never answer; the ``Origin`` and
    ``Sec-Fetch-Site`` headers are checked too) and POSTs whose body is not
    JSON, and answer every error as :func:`json_error`.

    :param cross_site: the message of the ``403`` of a cross-site POST.
    :param invalid: the error of a request the store refuses: a ``400``
        with its message.
    :param unavailable: the error of a store that cannot be reached, and
        the message of its ``503`` (the error itself is logged, not shown).
    :param body: an attribute of :data:`flask.g` that each POST's body
        (:func:`read_body`) is read into before the view runs; ``None``
        leaves the body to the view.
    """
    unavailable_error, unavailable_message = unavailable

    @blueprint.before_request
    def _protect() -> None:
        if request.method != "POST":
            return
        if not same_origin():
            raise Forbidden(cross_site)
        if not request.is_json:
            raise UnsupportedMediaType("Send the request body as JSON (Content-Type: application/json).")
        if body is not None:
            setattr(g, body, read_body())

    @blueprint.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        return json_error(exc.code or 500, exc.description or exc.name)

    @blueprint.errorhandler(invalid)
    def _bad_request(exc: Exception) -> tuple[Response, int]:
        return json_error(400, str(exc))

    @blueprint.errorhandler(unavailable_error)
    def _unavailable(exc: Exception) -> tuple[Response, int]:
        current_app.logger.warning("%s", exc)
        return json_error(503, unavailable_message)
