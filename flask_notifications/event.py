"""The event model: a validated dictionary that travels as JSON."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import InvalidEventError

_STRING_FIELDS = ("event_id", "event_type", "title", "body", "sender")
_LIST_FIELDS = ("recipients", "tags")
#: Identifiers: no control characters, so they fit an SSE field.
_NAME_FIELDS = ("event_id", "event_type")
#: Control characters (C0, DEL and C1), which no identifier may hold.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")
_DATE_FIELDS = ("timestamp", "expiration_datetime")
#: The fields every event has; anything else is an extra field.
FIELDS = (*_STRING_FIELDS, "timestamp", *_LIST_FIELDS, "expiration_datetime")
#: The fields an event given as a dictionary or JSON must have.
REQUIRED_FIELDS = ("event_type", "title")


def aware(value: datetime | float) -> datetime:
    """``value`` as a timezone-aware datetime.

    A naive datetime is taken as local time, as ``datetime.now()`` gives it,
    so that it compares with the timezone-aware timestamps events carry. A
    number is seconds since the epoch, as ``time.time()`` gives it and as
    Flask-Notifications 0.1 stored timestamps.

    :raises InvalidEventError: the number is out of the datetime range.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.astimezone()
    try:
        return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidEventError(f"{value!r} seconds since the epoch is out of the datetime range.") from exc


def _is_epoch(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_date(field: str, value: str) -> datetime:
    # ISO 8601 is what this version writes; an RFC 2822 HTTP date
    # ("Mon, 05 Jun 2017 10:00:00 GMT") is what 0.1 wrote through Flask's JSON.
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(
            f"Field {field!r} is not an ISO 8601 datetime (nor an HTTP date, as 0.1 wrote them): {value[:64]!r}.",
            field,
        ) from exc


def _check_json(field: str, value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise InvalidEventError(f"Field {field!r} is nested too deeply.", field)
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(field, value)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEventError(f"Field {field!r} holds {value}, which JSON cannot carry.", field)
        return
    if isinstance(value, int):
        try:
            str(value)
        except ValueError as exc:
            # Beyond sys.get_int_max_str_digits() json.dumps would fail later.
            raise InvalidEventError(f"Field {field!r} holds an integer too large to serialise.", field) from exc
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_json(field, item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEventError(f"Field {field!r} has a non-string key {key!r:.64}.", field)
            _check_text(field, key)
            _check_json(field, item, depth + 1)
        return
    raise InvalidEventError(f"Field {field!r} must be JSON-serialisable, got {type(value).__name__}.", field)


def _check_text(field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEventError(f"Field {field!r} is not valid Unicode text.", field) from exc


def _normalised(field: Any, value: Any) -> Any:
    """``value`` checked and normalised as field ``field`` of an event.

    :raises InvalidEventError: naming the field.
    """
    if field in _STRING_FIELDS:
        if not isinstance(value, str):
            raise InvalidEventError(f"Field {field!r} must be a string, got {type(value).__name__}.", field)
        _check_text(field, value)
        if field == "event_id" and not value:
            raise InvalidEventError("Field 'event_id' must not be empty.", "event_id")
        if field in _NAME_FIELDS and CONTROL_CHARACTERS.search(value):
            raise InvalidEventError(
                f"Field {field!r} must not contain control characters (it names the event in SSE streams and filters).",
                field,
            )
        return value
    if field in _LIST_FIELDS:
        return _string_list(field, value)
    if field in _DATE_FIELDS:
        if value is None and field == "expiration_datetime":
            return None
        if field == "timestamp" and _is_epoch(value):
            value = aware(value)
        if not isinstance(value, datetime):
            raise InvalidEventError(f"Field {field!r} must be a datetime, got {type(value).__name__}.", field)
        try:
            # Both conversions fail at the edges of the datetime range, and
            # the aware value is converted to UTC when the event is sent.
            value = aware(value)
            value.astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise InvalidEventError(f"Field {field!r} is out of the supported datetime range.", field) from exc
        return value
    if not isinstance(field, str):
        raise InvalidEventError(f"Field names must be strings, got {type(field).__name__} {field!r:.64}.")
    _check_text(field, field)
    _check_json(field, value)
    return value


def _string_list(field: str, value: Any) -> list[str]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidEventError(f"Field {field!r} must be a list of strings, got {type(value).__name__}.", field)
    items = list(value)
    if field == "recipients":
        # An integer user id (Flask-Login's current_user.id) is a
        # recipient as its decimal string, as filters and the inbox take it.
        items = [str(item) if isinstance(item, int) and not isinstance(item, bool) else item for item in items]
    for item in items:
        if not isinstance(item, str):
            raise InvalidEventError(
                f"Field {field!r} must hold "
                f"{'string or integer ids' if field == 'recipients' else 'strings'} only, "
                f"got {type(item).__name__}.",
                field,
            )
        _check_text(field, item)
    return items


class Event(dict[str, Any]):
    """A notification event.

    An event is a dictionary with a fixed model plus any extra fields, so
    ``event["title"]`` works and filters can inspect extra fields too::

        event = Event(None, "test", "A title", "The body", sender="system")
        notifications.send(event.to_json())

    :param event_id: unique id; ``None`` makes a fresh uuid4 string.
    :param event_type: free-form type, such as ``"user"`` or ``"system"``.
    :param title: short, human-readable title.
    :param body: the message.
    :param timestamp: when the event happened; ``None`` means now. A naive
        datetime is taken as local time and stored timezone-aware; a number
        is seconds since the epoch (``time.time()``, as 0.1 took it).
    :param sender: who sent it.
    :param recipients: who it is for: string ids; an integer id (such as
        Flask-Login's ``current_user.id``) is stored as its decimal string.
    :param tags: labels to filter on.
    :param expiration_datetime: after this moment the event is not delivered.
    :param extra: extra JSON-serialisable fields, kept and serialised.
    :raises InvalidEventError: a field has the wrong type.
    """

    def __init__(
        self,
        /,
        event_id: str | None,
        event_type: str,
        title: str,
        body: str,
        timestamp: datetime | float | None = None,
        sender: str = "",
        recipients: Iterable[str | int] = (),
        tags: Iterable[str] = (),
        expiration_datetime: datetime | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(
            event_id=str(uuid.uuid4()) if event_id is None else event_id,
            event_type=event_type,
            title=title,
            body=body,
            timestamp=datetime.now(UTC) if timestamp is None else timestamp,
            sender=sender,
            recipients=recipients,
            tags=tags,
            expiration_datetime=expiration_datetime,
            **extra,
        )
        self.validate()

    def validate(self) -> None:
        """Check every field and normalise it in place.

        Lists become lists of strings (an integer recipient its decimal
        string) and naive datetimes become aware. It is called on
        construction and again by :meth:`Notifications.send`; a field set by
        item assignment (``event["recipients"] = [5]``) or :meth:`update` is
        checked and normalised the same way at once.

        :raises InvalidEventError: naming the first offending field.
        """
        for field in FIELDS:
            if field not in self:
                raise InvalidEventError(f"Field {field!r} is missing.", field)
        for field, value in list(self.items()):
            dict.__setitem__(self, field, _normalised(field, value))

    def __setitem__(self, field: str, value: Any) -> None:
        dict.__setitem__(self, field, _normalised(field, value))

    def update(self, *args: Any, **fields: Any) -> None:
        """Set several fields, each checked and normalised as by item assignment."""
        for field, value in dict(*args, **fields).items():
            self[field] = value

    def setdefault(self, field: str, default: Any = None) -> Any:
        """Set ``field`` to ``default``, checked and normalised, unless it is set."""
        if field not in self:
            self[field] = default
        return self[field]

    @property
    def extra(self) -> dict[str, Any]:
        """The fields beyond the fixed model."""
        return {key: value for key, value in self.items() if key not in FIELDS}

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether ``expiration_datetime`` has passed. No expiration never expires."""
        expiration = self["expiration_datetime"]
        if expiration is None:
            return False
        return bool(expiration <= (now or datetime.now(UTC)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy: datetimes become ISO 8601 strings."""
        data = dict(self)
        for field in _DATE_FIELDS:
            if data[field] is not None:
                data[field] = data[field].isoformat()
        return data

    def to_json(self) -> str:
        """Serialise the event; :meth:`from_json` gives it back exactly."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def __str__(self) -> str:
        """The event's JSON, :meth:`to_json`, as in 0.1, so that
        ``f.write(str(event))`` writes the event."""
        return self.to_json()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Build an event from a dictionary such as :meth:`to_dict` gives.

        ``event_type`` and ``title`` are required. The other fields default as
        in the constructor: a fresh id, an empty body, now, no sender, no
        recipients, no tags and no expiration. :meth:`Notifications.send` and
        ``flask notifications send`` follow this one rule.

        :raises InvalidEventError: required fields are missing (the message
            names all of them), or a field has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise InvalidEventError(f"An event must be a JSON object, got {type(data).__name__}.")
        values = dict(data)
        missing = [field for field in REQUIRED_FIELDS if field not in values]
        if missing:
            names = " and ".join(repr(field) for field in missing)
            raise InvalidEventError(
                f"The event has no {names} field{'s' if len(missing) > 1 else ''}; "
                f"{' and '.join(REQUIRED_FIELDS)} are required, every other field has a default.",
                missing[0],
            )
        defaults: dict[str, Any] = {
            "event_id": None,
            "body": "",
            "timestamp": None,
            "sender": "",
            "recipients": [],
            "tags": [],
            "expiration_datetime": None,
        }
        # The given order stays, so that a round trip gives the same JSON.
        values.update((field, value) for field, value in defaults.items() if field not in values)
        # Made only when missing: a stream parses every event it reads.
        if "event_id" not in data:
            values["event_id"] = str(uuid.uuid4())
        if "timestamp" not in data:
            values["timestamp"] = datetime.now(UTC)
        for field in _DATE_FIELDS:
            value = values[field]
            if isinstance(value, str):
                values[field] = _parse_date(field, value)
        if values["sender"] is None:
            # 0.1's events could have no sender.
            values["sender"] = ""
        event = cls.__new__(cls)
        dict.update(event, values)
        event.validate()
        return event

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse an event from its JSON form, this version's or 0.1's (whose
        dates are HTTP dates and whose timestamp is seconds since the epoch),
        so that a message queued before an upgrade still runs.

        :raises InvalidEventError: the text is not valid JSON or not an event.
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise InvalidEventError(f"Event JSON must be str or bytes, got {type(text).__name__}.")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidEventError(f"Malformed event JSON: {exc}") from exc
        return cls.from_dict(data)

    def __repr__(self) -> str:
        return f"<Event {self['event_id']!r} type={self['event_type']!r} title={self['title']!r}>"


def as_event(value: Event | str | bytes) -> Event:
    """``value`` as an :class:`Event`: an event is returned as it is, its
    JSON is parsed. The predefined consumers take either, so that 0.1 code
    calling ``consumer.consume(event_json)`` still works.

    :raises InvalidEventError: ``value`` is neither.
    """
    if isinstance(value, Event):
        return value
    if isinstance(value, (str, bytes, bytearray)):
        return Event.from_json(bytes(value) if isinstance(value, bytearray) else value)
    raise InvalidEventError(f"Expected an Event or its JSON, got {type(value).__name__}.")
