"""The browser the tests of the client drive: Debian's Chromium through
playwright-core, launched once per test and closed after it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.project.test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_playwright = _require_browser()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
