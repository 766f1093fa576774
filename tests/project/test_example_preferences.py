"""The example's settings panel: the viewer's preferences, served by the
preferences blueprint, honoured by the example's own consumers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.example import ROOT, load_example


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    module = load_example(
        monkeypatch,
        EXAMPLE_LOG_FILE=str(tmp_path / "events.log"),
        NOTIFICATIONS_INBOX_URL=f"sqlite:///{tmp_path / 'inbox.sqlite3'}",
    )
    yield module
    module.notifications.get_backend(module.app).close()
    with module.app.app_context():
        module.notifications.inbox.close()


def test_the_panel_turns_a_channel_off_for_the_viewer_only(example: ModuleType) -> None:
    client = example.app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert 'id="preferences" data-api="/preferences/"' in page and "/static/preferences.js" in page
    assert "innerHTML" not in (ROOT / "examples" / "static" / "preferences.js").read_text()

    settings = client.get("/preferences/").json
    assert settings == {
        "hubs": {
            "UserHub": {"channels": {"stream": True, "inbox": True}, "required": []},
            "SystemHub": {"channels": {"stream": True}, "required": ["stream"]},
        }
    }
    # The viewer is tom; he turns UserHub's inbox off.
    changed = client.post("/preferences/", json={"hubs": {"UserHub": {"inbox": False}}})
    assert changed.status_code == 200
    refused = client.post("/preferences/", json={"hubs": {"SystemHub": {"stream": False}}})
    assert refused.status_code == 409 and "required" in refused.json["error"]

    sent = client.post(
        "/send/user",
        data={"sender": "john", "recipients": "tom, tim", "title": "Hi both"},
        headers={"Accept": "application/json"},
    )
    assert sent.status_code == 202
    with example.app.app_context():
        inbox = example.notifications.inbox
        # The example runs its consumers in this process (eager): done by now.
        assert inbox.unread_count("tim") == 1
        assert inbox.unread_count("tom") == 0
