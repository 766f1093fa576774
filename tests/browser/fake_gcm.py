"""A stand-in for the two HTTP endpoints of Google's push service (GCM)
that Chromium calls when a page subscribes: the device check-in and the
registration of a subscription. Chromium is pointed at it with
:data:`FakeGcm.switches`; without it, a headless Chromium on a machine with
no network never answers ``pushManager.subscribe()``.

It answers the check-in with a device id and a security token (a
hand-encoded ``AndroidCheckinResponse`` protobuf: the fields Chromium
requires), and each registration with a token of its own, which Chromium
turns into the subscription's endpoint (``https://<push host>/fcm/send/<token>``).
The subscription's keys (``p256dh``, ``auth``) are Chromium's own: it makes
them itself, and keeps the private key.

What it does not stand in for is the delivery channel (GCM's MCS
connection): a push reaches the service worker through the DevTools
protocol instead (``ServiceWorker.deliverPushMessage``).
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tests.project.test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def checkin_response(android_id: int, security_token: int) -> bytes:
    """An ``AndroidCheckinResponse``: stats_ok (1), time_msec (3),
    android_id (7, fixed64), security_token (8, fixed64), settings_diff (9)."""
    return (
        _field(1, 0, _varint(1))
        + _field(3, 0, _varint(1_700_000_000_000))
        + _field(7, 1, struct.pack("<Q", android_id))
        + _field(8, 1, struct.pack("<Q", security_token))
        + _field(9, 0, _varint(0))
    )


class FakeGcm:
    """``with FakeGcm() as gcm:`` serves on a local port; ``gcm.registrations``
    holds each registration's form fields and the token it got."""

    def __init__(self) -> None:
        self.checkins = 0
        self.registrations: list[tuple[dict[str, str], str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def switches(self) -> list[str]:
        """Chromium's command-line switches that send its GCM client here.
        The MCS endpoint (the delivery channel) is a port where nothing listens."""
        return [
            f"--gcm-checkin-url={self.base}/checkin",
            f"--gcm-registration-url={self.base}/c2dm/register3",
            "--gcm-mcs-endpoint=https://127.0.0.1:9",
        ]

    def __enter__(self) -> FakeGcm:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def tokens_for(self, sender: str) -> list[str]:
        """The tokens given to registrations whose sender (the
        ``applicationServerKey``) is ``sender``."""
        with self.lock:
            return [token for form, token in self.registrations if form.get("sender") == sender]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gcm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/checkin":
                    with gcm.lock:
                        gcm.checkins += 1
                    self._answer(checkin_response(0x1234_5678_9ABC, 0x0FED_CBA9_8765), "application/x-protobuf")
                elif self.path == "/c2dm/register3":
                    form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
                    with gcm.lock:
                        token = f"fake-gcm-token-{len(gcm.registrations) + 1}"
                        gcm.registrations.append((form, token))
                    self._answer(f"token={token}".encode(), "text/plain")
                else:
                    self._answer(b"", "text/plain", 404)

            def _answer(self, data: bytes, content_type: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


@contextmanager
def push_chromium(origin: str, env: dict[str, str] | None = None) -> Iterator[tuple[Any, FakeGcm]]:
    """Headless Chromium with a profile of its own (push is refused in the
    incognito contexts that ``browser.new_context()`` makes), its GCM client
    sent to a :class:`FakeGcm`, and ``origin`` allowed to show notifications:
    ``(context, gcm)``. ``env`` is added to Chromium's environment."""
    sync_playwright = _require_browser()
    with FakeGcm() as gcm, tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS + gcm.switches,
            headless=True,
            env={**os.environ, **(env or {})},
        )
        try:
            context.grant_permissions(["notifications"], origin=origin)
            yield context, gcm
        finally:
            context.close()
