"""The example's "Notify me when the tab is closed" in headless Chromium, on
``python examples/app.py`` (what ``./examples/run.sh`` runs: the embedded
default, no server needed).

Without VAPID keys the page works and the button is off, saying how to turn
it on. With the keys that ``flask notifications webpush generate-keys``
prints, a click subscribes the browser (a real ``pushManager.subscribe()``,
its GCM check-in and registration answered by tests/browser/fake_gcm.py)
and the subscription is stored for the viewer, read back in SQL.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from flask_notifications.webpush.vapid import VapidKeys
from tests.browser.fake_gcm import push_chromium
from tests.helpers import wait_for
from tests.project.test_browser import CHROMIUM, CHROMIUM_ARGS, _answers, _require_browser, _Served

pytestmark = [pytest.mark.browser, pytest.mark.subprocess]


def _serve(tmp_path: Path, **env: str) -> _Served:
    server = _Served(tmp_path, **env)
    try:
        wait_for(lambda: server.proc.poll() is None and _answers(server.url), timeout=60)
    except BaseException:
        server.close()
        raise
    return server


def test_without_keys_the_page_works_and_the_button_says_why_it_is_off(tmp_path: Path) -> None:
    sync_playwright = _require_browser()
    server = _serve(tmp_path)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(server.url)
                page.locator("#streams .state[data-state=open]").nth(1).wait_for(timeout=30_000)
                button = page.get_by_role("button", name="Notify me when the tab is closed")
                assert button.is_disabled()
                status = str(page.locator("#web-push-status").text_content())
                assert status.startswith("Off: this server has no VAPID keys."), status
                assert "notifications webpush generate-keys" in status
                assert page.locator("#web-push").get_attribute("data-state") == "off"
                # The rest of the page works: a form sends, the feed shows it.
                page.click("#system-form button")
                page.locator("tr.event td.title", has_text="Maintenance tonight").wait_for(timeout=30_000)
                assert errors == []
            finally:
                browser.close()
    finally:
        server.close()


def test_with_keys_the_button_subscribes_and_the_subscription_is_stored(tmp_path: Path) -> None:
    keys = VapidKeys.generate("mailto:ops@example.org")
    database = tmp_path / "inbox.sqlite3"
    server = _serve(
        tmp_path,
        FLASK_NOTIFICATIONS_INBOX_URL=f"sqlite:///{database}",
        FLASK_NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY=keys.private_text,
        FLASK_NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT=keys.subject,
        # Google's push service, and the host Chromium names when its GCM
        # client is sent elsewhere (as here).
        FLASK_NOTIFICATIONS_WEBPUSH_ENDPOINTS=json.dumps(["https://fcm.googleapis.com", "https://jmt17.google.com"]),
    )
    origin = server.url.rstrip("/")
    try:
        with push_chromium(origin) as (context, gcm):
            page: Any = context.pages[0] if context.pages else context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "as/tim")
            button = page.get_by_role("button", name="Notify me when the tab is closed")
            assert button.is_enabled()
            button.click()
            page.locator("#web-push[data-state=on]").wait_for(timeout=60_000)
            status = str(page.locator("#web-push-status").text_content())
            assert status == "On: this browser is notified of tim's user events, even with the tab closed."
            subscription = page.evaluate(
                "async () => (await (await navigator.serviceWorker.ready).pushManager.getSubscription()).toJSON()"
            )
            (token,) = gcm.tokens_for(keys.public_text)
            assert subscription["endpoint"].endswith(f"/fcm/send/{token}")
            with sqlite3.connect(database) as db:
                rows = db.execute("SELECT recipient, endpoint, p256dh, auth FROM notifications_push_subscriptions")
                assert rows.fetchall() == [
                    ("tim", subscription["endpoint"], subscription["keys"]["p256dh"], subscription["keys"]["auth"])
                ]
            scope = page.evaluate("async () => (await navigator.serviceWorker.ready).scope")
            assert scope == server.url
            assert errors == []
    finally:
        server.close()
