"""The ledger sits below the worker stage and beside the transport: it never
imports the worker, the streams or the extension, at run time."""

from __future__ import annotations

import pytest

from tests.project.test_layout import MODULES, _top_level_imports

LEDGER = sorted(name for name in MODULES if name.startswith("flask_notifications.ledger"))
ABOVE = ("flask_notifications.worker", "flask_notifications.streaming", "flask_notifications.ext")


@pytest.mark.parametrize("name", LEDGER)
def test_the_ledger_imports_nothing_above_it(name: str) -> None:
    imported = _top_level_imports(name, MODULES[name])
    assert sorted(m for m in imported if m.startswith(ABOVE)) == []


def test_there_are_four_ledger_modules_their_due_tables_and_the_package() -> None:
    assert LEDGER == [
        "flask_notifications.ledger",
        "flask_notifications.ledger.base",
        "flask_notifications.ledger.choice",
        "flask_notifications.ledger.memory",
        "flask_notifications.ledger.redis",
        "flask_notifications.ledger.redis_timers",
        "flask_notifications.ledger.sql",
        "flask_notifications.ledger.sql_timers",
    ]
