"""A Web Push service for the tests, on a local port: it checks each
message's VAPID JWT (RFC 8292) against the application's public key and
decrypts its aes128gcm body (RFC 8291) with the device's private key, so a
test sees the exact bytes a browser would. Each device's answers can be
scripted (``429``, ``503``, ``410``...), and a device can hold a request
open until the test lets it go.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import jwt as vapid_jwt

from flask_notifications.webpush.vapid import b64url


@dataclass
class Device:
    """A browser profile: its key pair and auth secret, as
    ``PushManager.subscribe()`` creates them."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self, base: str) -> dict[str, Any]:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{base}/push/{self.name}",
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


@dataclass
class Push:
    """A message the service accepted, decrypted."""

    device: str
    plaintext: bytes
    body_size: int
    headers: dict[str, str]
    claims: dict[str, Any]
    at: float


class PushService:
    """The push service; ``with PushService(public_key) as service:``."""

    def __init__(self, vapid_public_key: str) -> None:
        self.vapid_public_key = vapid_public_key
        self.devices: dict[str, Device] = {}
        self.pushes: list[Push] = []
        self.attempts: list[tuple[str, int, float]] = []
        self.refusals: list[str] = []
        self.script: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.hold: set[str] = set()
        self.held = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> PushService:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def device(self, name: str) -> Device:
        self.devices[name] = Device(name)
        return self.devices[name]

    def answer(self, name: str, *answers: tuple[int, dict[str, str]]) -> None:
        """Answer the next pushes to ``name`` with ``answers``, then ``201``."""
        self.script[name] = list(answers)

    def received(self, name: str) -> list[Push]:
        with self.lock:
            return [push for push in self.pushes if push.device == name]

    def _check(self, name: str, headers: Any, body: bytes) -> tuple[bytes, dict[str, Any]]:
        """The plaintext and the VAPID claims, or an AssertionError."""
        scheme, _, params = headers.get("Authorization", "").partition(" ")
        assert scheme.lower() == "vapid", f"no VAPID authorization: {scheme!r}"
        parts = dict(part.split("=", 1) for part in params.split(","))
        assert parts["k"] == self.vapid_public_key, "signed with another application's key"
        claims: dict[str, Any] = vapid_jwt.decode(parts["t"], parts["k"])  # raises InvalidSignature
        assert claims["aud"] == self.base, claims
        assert time.time() < claims["exp"] <= time.time() + 24 * 3600, claims
        assert claims["sub"].startswith(("mailto:", "https:")), claims
        assert headers.get("Content-Encoding") == "aes128gcm"
        device = self.devices[name]
        plaintext = http_ece.decrypt(body, private_key=device.key, auth_secret=device.auth, version="aes128gcm")
        return plaintext, claims

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with service.lock:
                    script = service.script.get(name) or []
                    status, extra = script.pop(0) if script else (201, {})
                    service.attempts.append((name, status, time.monotonic()))
                if name in service.hold:
                    # Hold the request until the test lets it go, then drop
                    # it unanswered and unaccepted: a message the service
                    # never took.
                    service.hold.discard(name)
                    service.held.set()
                    service.release.wait(120)
                    self.close_connection = True
                    return
                if name not in service.devices:
                    status, extra = 404, {}
                if status == 201:
                    try:
                        plaintext, claims = service._check(name, self.headers, body)
                    except Exception as exc:  # noqa: BLE001 - any failure is a refusal
                        with service.lock:
                            service.refusals.append(f"{name}: {exc!r}")
                        status, extra = 400, {}
                    else:
                        headers = {key: self.headers[key] for key in ("TTL", "Urgency", "Topic") if key in self.headers}
                        with service.lock:
                            service.pushes.append(Push(name, plaintext, len(body), headers, claims, time.monotonic()))
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
