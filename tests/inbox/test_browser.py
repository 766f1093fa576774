"""The example page's bell in a real browser: Debian's Chromium, driven by
Playwright, against the example served by gunicorn under gevent, with a
Celery worker storing the inbox in SQLite.

Tom's bell counts a user event sent from the form, live; "mark all read" on
another device brings the first page's count to zero; Tim, viewing the page as
himself, sees his own inbox only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.project.test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    Example,
    _answers,
    _require_browser,
    running_example,
)

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.subprocess]


@pytest.fixture
def example(redis_url: str, redis_keys: str, tmp_path: Path) -> Iterator[Example]:
    inbox = f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    with running_example(redis_url, redis_keys, tmp_path, FLASK_NOTIFICATIONS_INBOX_URL=inbox) as example:
        yield example


def test_the_bell_counts_live_and_mark_all_read_reaches_every_tab(example: Example) -> None:
    sync_playwright = _require_browser()
    wait_for(lambda: _answers(example.url), timeout=60)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            tom = browser.new_context(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            tab1 = tom.new_page()
            tab1.on("pageerror", lambda error: errors.append(str(error)))
            tab1.goto(example.url)
            count = tab1.locator("notification-bell .count")
            tab1.locator("notification-bell .count[data-state=open]").wait_for(timeout=30_000)
            assert tab1.locator("#viewer").text_content() == "tom"
            assert count.text_content() == "0"

            # The form sends a user event to tom and tim: tom's bell counts it, live.
            tab1.fill("#user-form input[name=title]", "For <b>Tom</b> and Tim")
            tab1.click("#user-form button")
            tab1.locator("notification-bell .count.unread", has_text="1").wait_for(timeout=30_000)
            tab1.click("notification-bell .toggle")
            item = tab1.locator("notification-bell li.unread .title", has_text="For <b>Tom</b> and Tim")
            item.wait_for(timeout=30_000)
            assert tab1.locator("notification-bell li .title b").count() == 0  # text, never markup

            # Another device (a browser context of its own, as tom by default)
            # marks everything read: both bells go to 0.
            tab2 = browser.new_context().new_page()
            tab2.on("pageerror", lambda error: errors.append(str(error)))
            tab2.goto(example.url)
            tab2.locator("notification-bell .count.unread", has_text="1").wait_for(timeout=30_000)
            tab2.click("notification-bell .toggle")
            tab2.click("notification-bell .mark-all")
            tab2.locator("notification-bell .count:not(.unread)", has_text="0").wait_for(timeout=30_000)
            tab1.locator("notification-bell .count:not(.unread)", has_text="0").wait_for(timeout=30_000)
            tab1.locator("notification-bell li.read .title", has_text="For <b>Tom</b> and Tim").wait_for(timeout=30_000)

            ARTIFACTS.mkdir(exist_ok=True)
            tab1.screenshot(path=str(ARTIFACTS / "example-bell.png"), full_page=True)

            # Tim has his own inbox: the event, still unread.
            tim = browser.new_context().new_page()
            tim.on("pageerror", lambda error: errors.append(str(error)))
            tim.goto(example.url + "as/tim")
            assert tim.locator("#viewer").text_content() == "tim"
            tim.locator("notification-bell .count.unread", has_text="1").wait_for(timeout=30_000)
            assert errors == []
        finally:
            browser.close()


def test_the_bell_drops_a_badge_older_than_the_one_it_shows(example: Example, redis_url: str, unique: str) -> None:
    from flask import Flask

    from flask_notifications import Notifications
    from flask_notifications.event_hub import hub_id_for
    from flask_notifications.inbox import badge_event
    from tests.helpers import make_config

    sync_playwright = _require_browser()
    wait_for(lambda: _answers(example.url), timeout=60)
    publisher = Flask("badge_publisher")
    publisher.config.update(make_config(redis_url, unique))
    backend = Notifications(publisher).get_backend(publisher)
    channel = hub_id_for("Inbox")  # the example's badge channel
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context().new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(example.url)
            page.locator("notification-bell .count[data-state=open]").wait_for(timeout=30_000)
            page.fill("#user-form input[name=title]", "Versioned")
            page.click("#user-form button")
            page.locator("notification-bell .count.unread", has_text="1").wait_for(timeout=30_000)
            page.evaluate(
                """() => {
                  window.shownCounts = [];
                  const count = document.querySelector("notification-bell").shadowRoot.querySelector(".count");
                  new MutationObserver(() => window.shownCounts.push(count.textContent))
                    .observe(count, {childList: true, characterData: true, subtree: true});
                }"""
            )
            # A badge published late, older than the one the bell shows (tom's
            # first change had version 1), then a newer one.
            backend.publish_many(channel, [badge_event("tom", 99, 1).to_json()])
            backend.publish_many(channel, [badge_event("tom", 7, 10**9).to_json()])
            wait_for(lambda: "7" in page.evaluate("window.shownCounts"), timeout=30)
            assert "99" not in page.evaluate("window.shownCounts")
            assert errors == []
        finally:
            browser.close()
            backend.close()
