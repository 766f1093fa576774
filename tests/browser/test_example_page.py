"""The example page on the shipped client and ``<notification-bell>``, in
Chromium driven by Playwright, against the example served by ``gunicorn -k
gevent`` on Redis with a Celery worker.

- Two tabs following three hubs (UserHub, SystemHub and the bell's Inbox)
  hold one connection to the server: counted on the server.
- The bell shows the same count in both tabs after a mark-read in either.
- axe-core (npm, tests/browser/tooling) finds no serious violation on the
  page, with the bell open, at 800 px and at 390 px.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import missing, wait_for
from tests.project.test_browser import Example, _answers, running_example

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.subprocess]

AXE = Path(__file__).resolve().parent / "tooling" / "node_modules" / "axe-core" / "axe.min.js"
BELL = "notification-bell"


@pytest.fixture
def example(redis_url: str, redis_keys: str, tmp_path: Path) -> Iterator[Example]:
    inbox = f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    with running_example(
        redis_url,
        redis_keys,
        tmp_path,
        FLASK_NOTIFICATIONS_INBOX_URL=inbox,
        FLASK_NOTIFICATIONS_METRICS="true",
        FLASK_NOTIFICATIONS_SSE_RETRY="500",
    ) as running:
        wait_for(lambda: _answers(running.url), timeout=60)
        yield running


def _streams_open(example: Example) -> dict[str, float]:
    """The server's streams receiving live events, by hub (its metrics)."""
    with urllib.request.urlopen(example.url + "metrics", timeout=20) as answer:
        text = answer.read().decode()
    found = re.findall(r'^notifications_streams_open\{hub="([^"]+)"\} (\S+)$', text, re.MULTILINE)
    return {hub: float(value) for hub, value in found if float(value)}


def _open_tab(context: Any, example: Example, errors: list[str], path: str = "") -> Any:
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(example.url + path)
    page.locator("#streams .state[data-state=open]").nth(1).wait_for(timeout=30_000)
    page.locator(f"{BELL} .count[data-state=open]").wait_for(timeout=30_000)
    return page


def _count(page: Any) -> str:
    return str(page.locator(f"{BELL} .count").text_content())


def test_three_hubs_in_two_tabs_hold_one_connection(example: Example, browser: Any) -> None:
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tabs = [_open_tab(context, example, errors) for _ in range(2)]
    assert [tab.evaluate("window.notifications.transport") for tab in tabs] == ["shared", "shared"]
    one_each = {"event-hub-UserHub": 1.0, "event-hub-SystemHub": 1.0, "event-hub-Inbox": 1.0}
    wait_for(lambda: _streams_open(example) == one_each, timeout=30)

    # Both tabs get what the one connection carries, once each.
    tabs[1].fill("#system-form input[name=title]", "To every tab")
    tabs[1].click("#system-form button")
    for tab in tabs:
        tab.locator("tr.event td.title", has_text="To every tab").wait_for(timeout=30_000)
    assert [tab.locator("tr.event td.title", has_text="To every tab").count() for tab in tabs] == [1, 1]
    assert _streams_open(example) == one_each

    # A third tab that cannot share (a client told not to) opens its own.
    solo = context.new_page()
    solo.goto(example.url + "metrics")
    solo.evaluate(
        """async () => {
          const { connect } = await import("/notifications/static/notifications.js");
          window.solo = connect({ hubs: ["SystemHub"], shared: false });
        }"""
    )
    wait_for(lambda: _streams_open(example).get("event-hub-SystemHub") == 2.0, timeout=30)
    assert solo.evaluate("window.solo.transport") == "tab"
    assert errors == []


def test_the_bell_shows_the_same_count_in_two_tabs_after_a_mark_read_in_either(example: Example, browser: Any) -> None:
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    first, second = (_open_tab(context, example, errors) for _ in range(2))
    for title in ("First for Tom", "Second for Tom"):
        first.fill("#user-form input[name=title]", title)
        first.click("#user-form button")
        first.locator("tr.event td.title", has_text=title).wait_for(timeout=30_000)
    wait_for(lambda: _count(first) == _count(second) == "2", timeout=30)

    # One read in the first tab...
    first.click(f"{BELL} .toggle")
    first.locator(f"{BELL} li.unread .title", has_text="First for Tom").wait_for(timeout=30_000)
    first.click(f"{BELL} li.unread button[aria-label='Mark read: First for Tom']")
    wait_for(lambda: _count(first) == _count(second) == "1", timeout=30)
    # ...and all of them in the second.
    second.click(f"{BELL} .toggle")
    second.click(f"{BELL} .mark-all")
    wait_for(lambda: _count(first) == _count(second) == "0", timeout=30)
    first.locator(f"{BELL} li.read .title", has_text="Second for Tom").wait_for(timeout=30_000)
    assert first.locator(f"{BELL} li.unread").count() == 0
    assert errors == []


def _axe_serious(page: Any) -> list[dict[str, Any]]:
    if not AXE.exists():
        missing("axe-core is not installed: run 'npm ci' in tests/browser/tooling")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => JSON.stringify(await axe.run(document, { resultTypes: ['violations'] }))")
    violations: list[dict[str, Any]] = json.loads(result)["violations"]
    return [
        {"id": item["id"], "impact": item["impact"], "nodes": [node["target"] for node in item["nodes"]]}
        for item in violations
        if item["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("width", [800, 390])
def test_axe_finds_no_serious_violation_on_the_page_and_the_open_bell(
    example: Example, browser: Any, width: int
) -> None:
    errors: list[str] = []
    context = browser.new_context(viewport={"width": width, "height": 844}, reduced_motion="reduce")
    page = _open_tab(context, example, errors)
    page.fill("#user-form input[name=title]", "Accessible")
    page.click("#user-form button")
    page.locator("tr.event td.title", has_text="Accessible").wait_for(timeout=30_000)
    page.locator(f"{BELL} .count.unread", has_text="1").wait_for(timeout=30_000)
    assert _axe_serious(page) == []

    # The bell, opened from the keyboard; Escape closes it and gives the focus back.
    page.focus(f"{BELL} .toggle")
    page.keyboard.press("Enter")
    page.locator(f"{BELL} li.unread .title", has_text="Accessible").wait_for(timeout=30_000)
    assert page.locator(f"{BELL} .toggle").get_attribute("aria-expanded") == "true"
    assert page.get_by_role("button", name="Inbox 1 unread", exact=True).count() == 1
    assert _axe_serious(page) == []
    # Nothing scrolls sideways, the open panel included.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    box = page.locator(f"{BELL} .panel").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    page.keyboard.press("Tab")  # into the panel: the "Mark all read" button
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.className") == "mark-all"
    page.keyboard.press("Escape")
    assert page.locator(f"{BELL} .toggle").get_attribute("aria-expanded") == "false"
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.className") == "toggle"
    assert errors == []
