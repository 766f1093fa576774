"""The shipped service worker (``notifications-sw.js``) in Debian's headless
Chromium, on a test application served by gunicorn.

What is real: Chromium registers the service worker the webpush blueprint
serves, and ``pushManager.subscribe()`` runs with the application's VAPID
public key and makes the subscription's keys; the page posts it to the
blueprint, which stores it (the row is read back in SQL); the service worker
shows a push as a notification. What is not: Chromium's push service. Its
check-in and registration are answered by a local stand-in
(tests/browser/fake_gcm.py), so the endpoint is not a real one, and the
push reaches the service worker through the DevTools protocol
(``ServiceWorker.deliverPushMessage``), unencrypted: the encryption is
tested against the local push service of tests/consumers/test_webpush.py.
The payload delivered is the JSON WebPushConsumer sends, byte for byte.

The click is real too: Chromium shows the notification on a desktop
notification server of the test (tests/browser/fake_desktop.py, on a private
D-Bus session bus), and a click there (its ``ActionInvoked`` signal) is
Chromium's own path for a user's click: the service worker's
``notificationclick`` opens the event's url in a new window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_notifications import Event
from flask_notifications.webpush.payload import default_payload, fit
from flask_notifications.webpush.vapid import VapidKeys
from tests.browser.fake_desktop import DesktopNotifications
from tests.browser.fake_gcm import FakeGcm, push_chromium
from tests.helpers import free_port, wait_for
from tests.helpers.example import ROOT
from tests.project.test_browser import _answers

pytestmark = [pytest.mark.browser, pytest.mark.subprocess]

#: Registers the shipped service worker, subscribes with the app's key and
#: stores the subscription through the blueprint, as docs/channels.rst shows.
SUBSCRIBE = """async () => {
  const prefix = "/push";
  const registration = await navigator.serviceWorker.register(prefix + "/notifications-sw.js", { scope: "/" });
  await navigator.serviceWorker.ready;
  const { public_key } = await (await fetch(prefix + "/vapid-public-key")).json();
  const subscription = await registration.pushManager.subscribe({
    userVisibleOnly: true, applicationServerKey: public_key });
  const stored = await fetch(prefix + "/subscribe", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(subscription.toJSON()) });
  return { subscription: subscription.toJSON(), status: stored.status, stored: await stored.json(),
           scope: registration.scope, publicKey: public_key };
}"""

#: The notifications the service worker shows.
SHOWN = """async () => {
  const registration = await navigator.serviceWorker.ready;
  const shown = await registration.getNotifications();
  return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, icon: n.icon, data: n.data }));
}"""


class WebPushApp:
    """tests/browser/webpush_app.py under gunicorn, on a SQLite file."""

    def __init__(self, tmp_path: Path, keys: VapidKeys) -> None:
        self.database = f"sqlite:///{tmp_path / 'push.sqlite3'}"
        config = {
            "NOTIFICATIONS_INBOX_URL": self.database,
            "NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY": keys.private_text,
            "NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT": keys.subject,
            # Chromium's endpoints: Google's, and the one it builds when its
            # GCM client is sent elsewhere (as here).
            "NOTIFICATIONS_WEBPUSH_ENDPOINTS": ["https://fcm.googleapis.com", "https://jmt17.google.com"],
        }
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "WEBPUSH_APP_CONFIG": json.dumps(config), "PYTHONPATH": str(ROOT)}
        self.log = tmp_path / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{self.port}"]
                + ["--log-level", "warning", "tests.browser.webpush_app:create_app()"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def rows(self) -> list[dict[str, Any]]:
        engine = sa.create_engine(self.database)
        try:
            with engine.connect() as conn:
                query = "SELECT recipient, endpoint, p256dh, auth FROM notifications_push_subscriptions ORDER BY id"
                return [dict(row._mapping) for row in conn.execute(sa.text(query))]
        finally:
            engine.dispose()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def webpush_app(tmp_path: Path, vapid_keys: VapidKeys) -> Iterator[WebPushApp]:
    served = WebPushApp(tmp_path, vapid_keys)
    try:
        wait_for(lambda: served.proc.poll() is None and _answers(served.base + "/"), timeout=60)
        yield served
    finally:
        served.close()
        sys.stderr.write(served.log.read_text(errors="replace")[-4000:])


@pytest.fixture
def vapid_keys() -> VapidKeys:
    return VapidKeys.generate("mailto:ops@example.org")


@pytest.fixture
def desktop() -> Iterator[DesktopNotifications]:
    with DesktopNotifications() as notifications:
        yield notifications


@pytest.fixture
def chromium(webpush_app: WebPushApp, desktop: DesktopNotifications) -> Iterator[tuple[Any, FakeGcm]]:
    with push_chromium(webpush_app.base, desktop.env) as found:
        yield found


class DevToolsPush:
    """Delivers pushes to the page's service worker registration of
    ``scope`` through the DevTools protocol, and waits until the service
    worker's push event completed (the background services log says so),
    as Chromium's own push service would."""

    def __init__(self, context: Any, page: Any, origin: str, scope: str) -> None:
        self.page = page
        self.origin = origin
        self.cdp = context.new_cdp_session(page)
        self.registrations: dict[str, str] = {}
        self.completed: list[str] = []
        self.cdp.on("ServiceWorker.workerRegistrationUpdated", self._registration)
        self.cdp.on("BackgroundService.backgroundServiceEventReceived", self._logged)
        self.cdp.send("BackgroundService.startObserving", {"service": "pushMessaging"})
        self.cdp.send("BackgroundService.setRecording", {"shouldRecord": True, "service": "pushMessaging"})
        self.cdp.send("ServiceWorker.enable")
        self.registration = str(self._wait(lambda: self.registrations.get(scope)))

    def _registration(self, params: dict[str, Any]) -> None:
        for registration in params["registrations"]:
            if not registration.get("isDeleted"):
                self.registrations[registration["scopeURL"]] = registration["registrationId"]

    def _logged(self, params: dict[str, Any]) -> None:
        event = params["backgroundServiceEvent"]
        if event["eventName"] == "Push event completed":
            self.completed.append({item["key"]: item["value"] for item in event["eventMetadata"]}["Status"])

    def _wait(self, predicate: Any) -> Any:
        # Playwright's sync API hands events over only while it runs a call.
        return wait_for(lambda: self.page.evaluate("1") and predicate(), timeout=30)

    def deliver(self, data: bytes) -> str:
        """Push ``data`` (UTF-8 text: the protocol takes a string); return how
        the service worker's push event ended."""
        before = len(self.completed)
        self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": self.origin, "registrationId": self.registration, "data": data.decode("utf-8")},
        )
        self._wait(lambda: len(self.completed) > before)
        return self.completed[before]


def test_chromium_subscribes_through_the_blueprint_and_the_service_worker_shows_the_push(
    webpush_app: WebPushApp, chromium: tuple[Any, FakeGcm], vapid_keys: VapidKeys, desktop: DesktopNotifications
) -> None:
    context, gcm = chromium
    page = context.pages[0] if context.pages else context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(webpush_app.base + "/login/alice")

    # 1. A real subscription, with the app's key, stored through the blueprint.
    result = page.evaluate(SUBSCRIBE)
    assert result["status"] == 201, result
    assert result["publicKey"] == vapid_keys.public_text
    subscription = result["subscription"]
    (token,) = gcm.tokens_for(vapid_keys.public_text)  # Chromium registered with the app's key
    assert subscription["endpoint"].endswith(f"/fcm/send/{token}")
    assert result["stored"]["endpoint"] == subscription["endpoint"]
    assert webpush_app.rows() == [
        {
            "recipient": "alice",
            "endpoint": subscription["endpoint"],
            "p256dh": subscription["keys"]["p256dh"],
            "auth": subscription["keys"]["auth"],
        }
    ]

    # 2. A push: the exact bytes WebPushConsumer sends for this event. (The
    # page lists the notifications once the push event completed: Chromium
    # may leave out one that a concurrent getNotifications() raced with.)
    event = Event(None, "comment", "Nouveau commentaire ✓", "« Bravo » — 👍", recipients=["alice"], url="/posts/7?x=1")
    data = fit(default_payload(event))
    push = DevToolsPush(context, page, webpush_app.base, result["scope"])
    assert push.deliver(data) == "Success"
    assert page.evaluate(SHOWN) == [
        {
            "title": "Nouveau commentaire ✓",
            "body": "« Bravo » — 👍",
            "tag": event["event_id"],
            "icon": "",
            "data": {
                "url": webpush_app.base + "/posts/7?x=1",
                "event_id": event["event_id"],
                "event_type": "comment",
            },
        }
    ]

    # 3. The same event again replaces it (its tag); an event's own tag and
    # icon are used; a url on another site opens the site's root instead.
    assert push.deliver(data) == "Success"
    elsewhere = Event(
        None, "phish", "Elsewhere", "", recipients=["alice"], url="https://evil.example/login", tag="ops", icon="/i.png"
    )
    assert push.deliver(fit(default_payload(elsewhere))) == "Success"
    by_title = {notification["title"]: notification for notification in page.evaluate(SHOWN)}
    assert set(by_title) == {"Nouveau commentaire ✓", "Elsewhere"}
    assert by_title["Elsewhere"]["data"]["url"] == webpush_app.base + "/"
    assert (by_title["Elsewhere"]["tag"], by_title["Elsewhere"]["icon"]) == ("ops", webpush_app.base + "/i.png")

    # 4. A click on the desktop's notification (Chromium's own click path)
    # opens the event's url in a new window, and closes the notification.
    shown = desktop.wait_shown("Nouveau commentaire ✓", count=2)  # pushed twice so far
    assert shown.body.endswith("« Bravo » — 👍") and "default" in shown.actions
    opened = _click(context, desktop, shown)
    assert opened.url == webpush_app.base + "/posts/7?x=1"
    assert opened.locator("h1").text_content() == "Post 7"
    wait_for(lambda: [n["title"] for n in page.evaluate(SHOWN)] == ["Elsewhere"])
    # The event again, clicked again: the window on its url is focused, no
    # second one opened (checked once the next click's window has opened).
    assert push.deliver(data) == "Success"
    desktop.click(desktop.wait_shown("Nouveau commentaire ✓", count=3))
    wait_for(lambda: [n["title"] for n in page.evaluate(SHOWN)] == ["Elsewhere"])
    # The one to another site opens the site's root (no window is on it now).
    page.goto(webpush_app.base + "/posts/8")
    opened = _click(context, desktop, desktop.wait_shown("Elsewhere"))
    assert opened.url == webpush_app.base + "/"
    urls = sorted(window.url for window in context.pages)
    assert urls == [webpush_app.base + path for path in ("/", "/posts/7?x=1", "/posts/8")]
    assert errors == []


def _click(context: Any, desktop: DesktopNotifications, shown: Any) -> Any:
    """Click ``shown`` on the desktop; the window its click opened."""
    with context.expect_page(timeout=30_000) as opened:
        desktop.click(shown)
    page = opened.value
    page.wait_for_load_state()
    return page
