"""Load the example application (examples/app.py) as its users run it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_example(
    monkeypatch: pytest.MonkeyPatch, *, redis_url: str | None = None, mail: tuple[str, int] | None = None, **config: str
) -> ModuleType:
    """Import ``examples.app`` afresh, configured through the environment.

    With ``redis_url`` it runs on Redis (the real path); otherwise on the
    embedded default. With ``mail``, a (host, port), it mails system events
    there. ``config`` sets config keys through ``FLASK_<KEY>``.
    """
    if redis_url is None:
        monkeypatch.delenv("REDIS_URL", raising=False)
    else:
        monkeypatch.setenv("REDIS_URL", redis_url)
    if mail is None:
        monkeypatch.delenv("MAIL_SERVER", raising=False)
    else:
        monkeypatch.setenv("MAIL_SERVER", mail[0])
        monkeypatch.setenv("MAIL_PORT", str(mail[1]))
    for key, value in config.items():
        monkeypatch.setenv(f"FLASK_{key}", value)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.app", None)
    module = importlib.import_module("examples.app")
    monkeypatch.setitem(sys.modules, "examples.app", module)
    return module
