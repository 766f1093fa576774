"""The example page in a real browser: Debian's Chromium, driven by
Playwright, against the example served by gunicorn under gevent, on Redis,
with a Celery worker.

It sends an event from the page's form and sees it arrive; then it stops the
server, sends events while the page is disconnected, restarts the server and
sees the events arrive after the browser's automatic reconnect: Last-Event-ID
replay, end to end. It saves a screenshot under tests/artifacts/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.event import Event
from tests.helpers import free_port, wait_for
from tests.helpers.example import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


#: What the form shows when the send's outbox record fails.
OUTBOX_DOWN = "Not sent: Could not record the send in the outbox, so event "


def _require_browser() -> Any:
    """Playwright's sync API, or a skip (a failure in CI) saying what is missing."""
    missing = None
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "Playwright for Python is not installed (pip install playwright; no browser download)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"The browser test cannot run in CI: {missing}.")
        pytest.skip(f"The browser test needs a browser: {missing}.")
    return sync_playwright


class Example:
    """The example's processes: a Celery worker and a gunicorn server that
    can be stopped and started again on the same port."""

    def __init__(self, env: dict[str, str], port: int, logs: Path) -> None:
        # Its own metrics directory, as docs/operations.rst has a deployment
        # set one: the automatic one is per process group, and every server
        # a test process starts shares the test process's group, so the
        # metrics of other tests' servers were summed into this one's.
        metrics = logs / "prometheus"
        metrics.mkdir(exist_ok=True)
        self.env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.port = port
        self.logs = logs
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}/"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def start_worker(self) -> None:
        self.worker = self._spawn(
            "worker",
            ["celery", "-A", "examples.app:celery", "worker", "-P", "gevent", "-c", "10"]
            + ["--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        )

    def start_server(self) -> None:
        self.server = self._spawn(
            "server",
            ["gunicorn", "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "2"]
            + ["examples.app:app"],
        )

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
            self.server.wait(timeout=30)
        self.server = None

    def send(self, *args: str) -> None:
        """Send an event with the CLI, from a process of its own."""
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "examples.app", "notifications", "send", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def close(self) -> None:
        self.stop_server()
        if self.worker is not None:
            self.worker.terminate()
            self.worker.wait(timeout=30)


@contextmanager
def running_example(redis_url: str, unique: str, tmp_path: Path, **settings: str) -> Iterator[Example]:
    """The example's worker and server on the real Redis, isolated by
    ``unique`` (the caller deletes its keys: the ``redis_keys`` fixture),
    with ``settings`` added to their environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLASK_")}
    env.update(
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        FLASK_NOTIFICATIONS_KEY_PREFIX=unique,
        FLASK_CELERY_TASK_DEFAULT_QUEUE=unique,
        FLASK_EXAMPLE_LOG_FILE=str(tmp_path / "events.log"),
        **settings,
    )
    env.pop("MAIL_SERVER", None)
    processes = Example(env, free_port(), tmp_path)
    try:
        processes.start_worker()
        processes.start_server()
        yield processes
    finally:
        processes.close()
        for log in sorted(tmp_path.glob("*.log")):
            sys.stderr.write(f"--- {log.name} ---\n{log.read_text(errors='replace')[-4000:]}\n")


@pytest.fixture
def example(redis_url: str, redis_keys: str, tmp_path: Path) -> Iterator[Example]:
    # Reconnect after half a second rather than three.
    with running_example(redis_url, redis_keys, tmp_path, FLASK_NOTIFICATIONS_SSE_RETRY="500") as example:
        yield example


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.mark.redis
@pytest.mark.subprocess
def test_the_page_shows_events_live_and_after_a_server_restart(example: Example, redis_url: str, unique: str) -> None:
    sync_playwright = _require_browser()
    wait_for(lambda: _answers(example.url), timeout=60)
    backend = RedisPubSub(url=redis_url, key_prefix=unique)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(example.url)
            live = page.locator("#streams .state[data-state=open]")
            live.nth(1).wait_for(timeout=30_000)

            def titles() -> list[str]:
                return [str(text) for text in page.locator("tr.event td.title").all_text_contents()]

            # 1. The forms send events, which come back over the streams.
            page.fill("#system-form input[name=title]", "Deploy <b>tonight</b>")
            page.click("#system-form button")
            page.locator("tr.event td.title", has_text="Deploy <b>tonight</b>").wait_for(timeout=30_000)
            # The form's feedback comes with the answer to its POST, which may
            # come after the event itself arrived over the stream: wait for it.
            page.locator("#system-form output", has_text="Sent to SystemHub.").wait_for(timeout=30_000)
            assert page.locator("#system-form output").text_content() == "Sent to SystemHub."
            page.click("#user-form button")
            page.locator("tr.event td.title", has_text="Hello Tom and Tim").wait_for(timeout=30_000)
            # Event text is text, never markup.
            assert page.locator("tr.event td.title b").count() == 0
            row = page.locator("tr.event", has_text="Hello Tom and Tim")
            assert row.locator("td.hub").text_content() == "UserHub"
            assert row.locator("td.type").text_content() == "user"
            assert row.locator("td.body").text_content() == "How are you?"

            # 2. Stop the server; the page notices and tries to reconnect.
            example.stop_server()
            page.locator("#streams .state[data-state=open]").first.wait_for(state="detached", timeout=30_000)
            wait_for(lambda: live.count() == 0, timeout=30)
            assert page.locator("tr.marker.lost").count() >= 1

            # Events sent meanwhile reach the worker and the hubs' history...
            before = len(backend.history("event-hub-SystemHub", None).messages)
            for number in (1, 2):
                example.send("--type", "system", "--title", f"While away {number}", "--body", "replayed")
            example.send("--type", "user", "--title", "Missed you", "--sender", "john")
            wait_for(lambda: len(backend.history("event-hub-SystemHub", None).messages) == before + 2, timeout=60)
            assert live.count() == 0

            # ...and the page gets them once the restarted server answers.
            example.start_server()
            for title in ("While away 1", "While away 2", "Missed you"):
                page.locator("tr.event td.title", has_text=title).wait_for(timeout=60_000)
            live.nth(1).wait_for(timeout=30_000)
            assert page.locator("tr.marker.reconnected").count() >= 1
            # Events sent while the server was down came: the client resumed
            # from the last id it saw (its stream runs in a SharedWorker,
            # whose requests the page does not see).
            shown = titles()
            assert shown.count("While away 1") == shown.count("While away 2") == 1
            assert shown.count("Deploy <b>tonight</b>") == 1, "an event seen before the restart was shown again"
            # Newest first, in the order they were sent.
            assert shown.index("While away 2") < shown.index("While away 1")

            # 3. A screenshot to look at.
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "example-page.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()

    backend.close()
    assert [
        Event.from_json(line)["title"] for line in Path(example.env["FLASK_EXAMPLE_LOG_FILE"]).read_text().splitlines()
    ] == [
        "Hello Tom and Tim",
        "Missed you",
    ]


def test_chromium_is_where_the_test_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Chromium the browser test skips and says why (outside CI)."""
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium at /nonexistent/chromium"):
        _require_browser()


class _Served:
    """``python examples/app.py`` (what run.sh runs) on a free port."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_") and k != "REDIS_URL"}
        environ.update(PORT=str(self.port), FLASK_EXAMPLE_LOG_FILE=str(tmp_path / "events.log"), **env)
        environ.pop("MAIL_SERVER", None)
        self.log = tmp_path / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "examples/app.py"], cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT
            )

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Served]:
    server = _Served(tmp_path)
    try:
        wait_for(lambda: _answers(server.url), timeout=60)
        yield server
    finally:
        server.close()


def _phone_page(browser: Any) -> Any:
    return browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)


@pytest.mark.subprocess
def test_the_page_fits_a_phone_screen(served: _Served) -> None:
    """At 390 px nothing scrolls sideways, even with a long event shown, and
    every resource the page asks for, the favicon included, is there."""
    sync_playwright = _require_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = _phone_page(browser)
            failed: list[str] = []
            page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
            page.goto(served.url)
            page.locator("#streams .state[data-state=open]").nth(1).wait_for(timeout=30_000)
            long_title = "A-very-long-title-without-any-space-" * 5
            page.fill("#system-form input[name=title]", long_title[:200])
            page.click("#system-form button")
            page.locator("tr.event td.title", has_text=long_title[:40]).wait_for(timeout=30_000)
            # The form's feedback comes with the answer to its POST, which may
            # come after the event itself arrived over the stream: wait for it.
            page.locator("#system-form output", has_text="Sent to SystemHub.").wait_for(timeout=30_000)
            assert page.locator("#system-form output").text_content() == "Sent to SystemHub."

            width = page.evaluate("window.innerWidth")
            assert width == 390
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            for selector in ("header", "#user-form", "#system-form", ".feed", "#system-form button"):
                box = page.locator(selector).bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, selector
            page.evaluate("fetch('/favicon.ico')")  # what a browser without <link rel=icon> asks for
            wait_for(lambda: page.evaluate("performance.getEntriesByName(location.origin + '/favicon.ico').length"))
            icon = page.evaluate("document.querySelector('link[rel=icon]').href")
            assert page.request.get(icon).status == 200
            assert failed == []
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "example-page-390.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.subprocess
def test_the_form_shows_the_library_error_during_an_outage(tmp_path: Path) -> None:
    """With the broker down, the form says why nothing was sent, in words."""
    sync_playwright = _require_browser()
    server = _Served(tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        wait_for(lambda: _answers(server.url), timeout=60)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(server.url)
                page.click("#system-form button")
                output = page.locator("#system-form output.error")
                output.wait_for(timeout=60_000)
                text = str(output.text_content())
                # The ledger is on the same unreachable Redis: the send's
                # outbox record fails first, and nothing is enqueued.
                assert text.startswith(("Not sent: Could not reach the Celery broker, so event ", OUTBOX_DOWN)), text
                assert "JSON" not in text and "Unexpected token" not in text
                # An empty title never leaves the page: the browser asks for it.
                page.fill("#user-form input[name=title]", "")
                page.click("#user-form button")
                assert page.locator("#user-form input[name=title]:invalid").count() == 1
                assert page.locator("#user-form output").text_content() == ""
            finally:
                browser.close()
    finally:
        server.close()
