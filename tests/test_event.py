from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from flask_notifications.errors import InvalidEventError, NotificationsError
from flask_notifications.event import Event


def make(**fields: object) -> Event:
    return Event(None, "test", "Title", "Body", **fields)  # type: ignore[arg-type]


def test_defaults() -> None:
    event = make()
    assert uuid.UUID(event["event_id"]).version == 4
    assert event["timestamp"].tzinfo is not None
    assert abs(event["timestamp"] - datetime.now(UTC)) < timedelta(minutes=1)
    assert event["sender"] == "" and event["recipients"] == [] and event["tags"] == []
    assert event["expiration_datetime"] is None
    assert event["title"] == "Title" and event["body"] == "Body"
    assert make()["event_id"] != event["event_id"]


def test_json_round_trip_is_exact() -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    event = Event(
        "1234",
        "user",
        "Tïtle ✓",
        "line1\nline2\u2028",
        timestamp=datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=tz),
        sender="system",
        recipients=("jvican", "tom"),
        tags=["a", "b"],
        expiration_datetime=datetime(2030, 1, 1, tzinfo=UTC),
        priority="high",
        meta={"n": [1, 2.5, None, True]},
    )
    again = Event.from_json(event.to_json())
    assert again == event
    assert again["timestamp"].utcoffset() == timedelta(hours=5, minutes=30)
    assert again["priority"] == "high" and again.extra == {
        "priority": "high",
        "meta": {"n": [1, 2.5, None, True]},
    }
    assert json.loads(event.to_json())["timestamp"] == "2025-03-01T12:30:15.123456+05:30"


def test_naive_datetime_is_local_time() -> None:
    naive = datetime(2024, 6, 1, 10, 0)
    event = make(timestamp=naive)
    assert event["timestamp"].tzinfo is not None
    assert event["timestamp"] == naive.astimezone()
    assert Event.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", 5),
        ("recipients", "tom"),
        ("recipients", ["tom", 3.5]),  # an integer is a recipient id (issue 23)
        ("tags", None),
        ("timestamp", "yesterday"),
        ("expiration_datetime", 12),
    ],
)
def test_wrong_type_names_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidEventError) as info:
        make(**{field: value})
    assert info.value.field == field
    assert repr(field) in str(info.value)
    assert isinstance(info.value, NotificationsError)


def test_positional_fields_are_checked() -> None:
    with pytest.raises(InvalidEventError, match="'title'"):
        Event(None, "test", None, "body")  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match="'event_id'"):
        Event("", "test", "t", "b")


def test_extra_fields_must_be_json() -> None:
    with pytest.raises(InvalidEventError, match="'blob'"):
        make(blob=object())
    with pytest.raises(InvalidEventError, match="'ratio'"):
        make(ratio=float("nan"))


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidEventError, match="'body'"):
        Event(None, "t", "t", "\ud800")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        "null",
        '{"event_id": "1"}',
        b"\xff\xfe",
        json.dumps({**make().to_dict(), "timestamp": "not a date"}),
        json.dumps({**make().to_dict(), "recipients": {"a": 1}}),
        "[" * 100000,
    ],
)
def test_malformed_json(text: str | bytes) -> None:
    with pytest.raises(InvalidEventError):
        Event.from_json(text)


def test_dict_access_and_mutation_revalidated() -> None:
    event = make()
    dict.__setitem__(event, "sender", 42)  # past the checks, as a subclass could
    with pytest.raises(InvalidEventError, match="'sender'"):
        event.validate()


def test_item_assignment_normalises_as_the_constructor_does() -> None:
    """Issue 23: an integer recipient set after construction is a string id
    too, and a wrong value is refused at the assignment, naming the field."""
    event = make()
    event["recipients"] = [5, "tom"]
    assert event["recipients"] == ["5", "tom"]
    event.update(recipients=(7,), tags=("a",))
    assert event["recipients"] == ["7"] and event["tags"] == ["a"]
    event["timestamp"] = 0
    assert event["timestamp"] == datetime(1970, 1, 1, tzinfo=UTC)
    naive = datetime(2030, 1, 1)
    event["expiration_datetime"] = naive
    assert event["expiration_datetime"].tzinfo is not None
    assert event == Event.from_json(event.to_json())
    for field, value in [("sender", 42), ("recipients", [3.5]), ("recipients", "tom"), ("ratio", float("nan"))]:
        with pytest.raises(InvalidEventError, match=repr(field)):
            event[field] = value
    with pytest.raises(InvalidEventError, match="'title'"):
        event.update(title=None)
    assert event["sender"] == "" and event["recipients"] == ["7"]


def test_is_expired() -> None:
    assert not make().is_expired()
    assert make(expiration_datetime=datetime.now(UTC) - timedelta(seconds=1)).is_expired()
    assert not make(expiration_datetime=datetime.now(UTC) + timedelta(hours=1)).is_expired()


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "\x00", "tab\there", "\x85next-line"])
@pytest.mark.parametrize("field", ["event_id", "event_type"])
def test_identifiers_refuse_control_characters(field: str, value: str) -> None:
    fields = {"event_id": "1", "event_type": "t", "title": "t", "body": "b", field: value}
    with pytest.raises(InvalidEventError, match="control characters") as info:
        Event(**fields)  # type: ignore[arg-type]
    assert info.value.field == field


def test_from_dict_needs_only_a_type_and_a_title() -> None:
    """One rule for ``send(dict)``, ``from_json`` and ``flask notifications send -``."""
    event = Event.from_dict({"event_type": "system", "title": "Deploy", "ticket": 42})
    assert uuid.UUID(event["event_id"]).version == 4
    assert (event["body"], event["sender"], event["recipients"], event["tags"]) == ("", "", [], [])
    assert event["expiration_datetime"] is None and event.extra == {"ticket": 42}
    assert abs(event["timestamp"] - datetime.now(UTC)) < timedelta(minutes=1)
    assert Event.from_json('{"event_type": "a", "title": "b"}')["title"] == "b"


def test_from_dict_names_every_missing_field_in_one_error() -> None:
    with pytest.raises(InvalidEventError) as info:
        Event.from_dict({"body": "no type, no title"})
    assert str(info.value).startswith("The event has no 'event_type' and 'title' fields;")
    assert info.value.field == "event_type"
    with pytest.raises(InvalidEventError, match="^The event has no 'title' field;"):
        Event.from_json('{"event_type": "a"}')
