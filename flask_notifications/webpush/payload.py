"""What a push carries: the JSON the service worker receives, kept within
the 4 KB a push service must accept, and the ``TTL``, ``Urgency`` and
``Topic`` headers of each event.

The trimming rule: a payload that is too large loses the end of its
``body`` first (cut at a character, ending in "…"), then of its ``title``,
and gets ``"truncated": true``. If it is still too large (a long ``url`` or
large extra data), the push is refused with
:class:`~flask_notifications.errors.PushPayloadTooLargeError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import PermanentConsumerError, PushPayloadTooLargeError
from ..event import Event
from .vapid import b64url

#: Largest plaintext that fits one 4096-byte aes128gcm message (RFC 8291):
#: 4096 less the 86-byte header, the 16-byte tag and the padding delimiter.
MAX_PAYLOAD = 4096 - 86 - 16 - 1
#: The urgencies of RFC 8030, least urgent first.
URGENCIES = ("very-low", "low", "normal", "high")
#: Longest TTL a push service is asked for: four weeks, what they keep at most.
MAX_TTL = 28 * 24 * 3600
ELLIPSIS = "…"


def default_payload(event: Event) -> dict[str, Any]:
    """The payload of ``event``: its ``title``, ``body``, ``event_id`` and
    ``event_type``, and the extra fields ``url`` (opened on click), ``icon``
    and ``tag`` (a notification with the tag of a shown one replaces it)
    when the event has them."""
    payload: dict[str, Any] = {
        "title": event["title"],
        "body": event["body"],
        "event_id": event["event_id"],
        "event_type": event["event_type"],
    }
    for key in ("url", "icon", "tag"):
        if isinstance(event.get(key), str):
            payload[key] = event[key]
    return payload


def _size(payload: Mapping[str, Any]) -> int:
    return len(encode(payload))


def encode(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _trim(payload: dict[str, Any], key: str, limit: int) -> dict[str, Any]:
    """``payload`` with as much of ``payload[key]`` as fits ``limit`` bytes."""
    text = payload.get(key)
    if not isinstance(text, str) or not text:
        return payload
    low, high = 0, len(text)
    best = {**payload, key: ""}
    while low <= high:
        keep = (low + high) // 2
        candidate = {**payload, key: text[:keep] + ELLIPSIS if keep else ""}
        if _size(candidate) <= limit:
            best, low = candidate, keep + 1
        else:
            high = keep - 1
    return best


def fit(payload: Mapping[str, Any], limit: int = MAX_PAYLOAD) -> bytes:
    """``payload`` encoded, trimmed to ``limit`` bytes by the rule above.

    :raises PushPayloadTooLargeError: it does not fit even without its body
        and title.
    """
    data = encode(payload)
    if len(data) <= limit:
        return data
    trimmed = {**payload, "truncated": True}
    for key in ("body", "title"):
        trimmed = _trim(trimmed, key, limit)
        if _size(trimmed) <= limit:
            return encode(trimmed)
    raise PushPayloadTooLargeError(
        f"The push payload is {len(data)} bytes and {_size(trimmed)} without its body and title; a push carries "
        f"at most {limit}. Shorten the event's url or extra fields, or pass a smaller payload= function."
    )


@dataclass(frozen=True)
class PushOptions:
    """The headers of one event's pushes.

    :param ttl: seconds the push service keeps the message for an offline device.
    :param urgency: one of :data:`URGENCIES`.
    :param topic: pending messages of one topic replace each other at the
        push service: each delivery's pushes share one, so a copy sent again
        replaces the first while the device is offline.
    """

    ttl: int
    urgency: str
    topic: str

    def headers(self) -> dict[str, str]:
        return {"TTL": str(self.ttl), "Urgency": self.urgency, "Topic": self.topic}


def push_options(
    event: Event, delivery_id: str, ttl: int | None, urgency: str | None, config: Mapping[str, Any]
) -> PushOptions:
    """The options of ``event``'s pushes: its ``push_ttl`` and
    ``push_urgency`` fields, else the consumer's ``ttl`` and ``urgency``,
    else ``NOTIFICATIONS_WEBPUSH_TTL`` and ``NOTIFICATIONS_WEBPUSH_URGENCY``.
    The TTL never outlives the event's ``expiration_datetime``.

    :raises PermanentConsumerError: the event's ``push_ttl`` or
        ``push_urgency`` is invalid.
    """
    chosen_ttl = event.get("push_ttl", ttl if ttl is not None else config["NOTIFICATIONS_WEBPUSH_TTL"])
    if isinstance(chosen_ttl, bool) or not isinstance(chosen_ttl, int) or chosen_ttl < 0:
        raise PermanentConsumerError(f"push_ttl is a whole number of seconds, 0 or more, not {chosen_ttl!r:.40}.")
    chosen_ttl = min(chosen_ttl, MAX_TTL)
    expires = event.get("expiration_datetime")
    if isinstance(expires, datetime):
        chosen_ttl = max(0, min(chosen_ttl, int((expires - datetime.now(UTC)).total_seconds())))
    chosen_urgency = event.get("push_urgency", urgency or config["NOTIFICATIONS_WEBPUSH_URGENCY"])
    if chosen_urgency not in URGENCIES:
        raise PermanentConsumerError(f"push_urgency is one of {', '.join(URGENCIES)}, not {chosen_urgency!r:.40}.")
    topic = b64url(hashlib.sha256(delivery_id.encode()).digest()[:24])
    return PushOptions(chosen_ttl, str(chosen_urgency), topic)
