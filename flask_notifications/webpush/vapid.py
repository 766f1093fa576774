"""VAPID (RFC 8292): the key pair that identifies the application to push
services, read from ``NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY`` and
``NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT``.

A browser subscribes with the public key (its ``applicationServerKey``) and
the push service then accepts only messages signed with the private key, so
a new pair invalidates every stored subscription.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, VapidException

from ..errors import ConfigurationError

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")

#: Seconds a signed VAPID token is valid; RFC 8292 allows at most 24 hours.
TOKEN_LIFETIME = 12 * 3600


def b64url(data: bytes) -> str:
    """``data`` in unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded (or padded) base64url.

    :raises ValueError: ``text`` is not base64url.
    """
    # Strict: a lenient decoder skips the characters it does not know, so
    # text with any junk in it would pass for the key it hides.
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url text")
    return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))


@dataclass(frozen=True)
class VapidKeys:
    """The application's VAPID key pair and subject.

    :param private_key: the P-256 private key.
    :param subject: a ``mailto:`` or ``https:`` URL the push service may use
        to reach the application's operator.
    """

    private_key: ec.EllipticCurvePrivateKey
    subject: str

    @classmethod
    def generate(cls, subject: str = "mailto:admin@example.org") -> VapidKeys:
        """A new random key pair."""
        return cls(ec.generate_private_key(ec.SECP256R1()), subject)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> VapidKeys:
        """The keys configured in ``config``.

        :raises ConfigurationError: a key is missing or malformed; the
            message names it.
        """
        text = config.get("NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY")
        subject = config.get("NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT")
        if not text or not isinstance(text, str):
            raise ConfigurationError(
                "Set NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY to send Web Push; "
                "'flask notifications webpush generate-keys' makes a pair."
            )
        if not isinstance(subject, str) or not subject.startswith(("mailto:", "https:")):
            raise ConfigurationError(
                "Set NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT to a mailto: or https: URL where push services can "
                f"reach you, not {subject!r}."
            )
        try:
            if "-----BEGIN" in text:
                loaded = serialization.load_pem_private_key(text.encode(), password=None)
            else:
                loaded = Vapid.from_string(text).private_key
        except (ValueError, TypeError, VapidException) as exc:
            raise ConfigurationError(
                "NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY is not a P-256 private key (base64url of its 32 bytes, "
                f"or PEM): {type(exc).__name__}."
            ) from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(loaded.curve, ec.SECP256R1):
            raise ConfigurationError("NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY is not a P-256 (prime256v1) key.")
        return cls(loaded, subject)

    @property
    def private_text(self) -> str:
        """The private key as base64url of its 32 bytes, the form the
        config key takes."""
        number = self.private_key.private_numbers().private_value
        return b64url(number.to_bytes(32, "big"))

    @property
    def public_text(self) -> str:
        """The public key as base64url of its uncompressed point: the
        browser's ``applicationServerKey``."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)

    def headers(self, endpoint: str, now: float | None = None) -> dict[str, str]:
        """The ``Authorization`` header of a push to ``endpoint``: a JWT
        signed for the endpoint's origin, valid for :data:`TOKEN_LIFETIME`.

        :raises ConfigurationError: the subject is refused by py-vapid.
        """
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int((now if now is not None else time.time()) + TOKEN_LIFETIME),
            "sub": self.subject,
        }
        vapid = Vapid()
        vapid.private_key = self.private_key
        try:
            signed: dict[str, str] = vapid.sign(claims)
        except VapidException as exc:
            raise ConfigurationError(f"VAPID refused the claims: {exc}") from None
        return signed
