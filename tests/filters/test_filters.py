from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flask_notifications import Not as RootNot
from flask_notifications.event import Event
from flask_notifications.event_filter import EventFilter
from flask_notifications.filters.after_date import AfterDate
from flask_notifications.filters.always import Always
from flask_notifications.filters.before_date import BeforeDate
from flask_notifications.filters.expired import Expired
from flask_notifications.filters.not_filter import Not
from flask_notifications.filters.with_event_type import WithEventType
from flask_notifications.filters.with_field import WithField
from flask_notifications.filters.with_id import WithId
from flask_notifications.filters.with_recipient import WithRecipient
from flask_notifications.filters.with_recipients import WithRecipients
from flask_notifications.filters.with_sender import WithSender
from flask_notifications.filters.with_tag import WithTag

NOW = datetime.now(UTC)


def event(**fields: object) -> Event:
    base: dict[str, object] = {
        "event_id": "1234",
        "event_type": "user",
        "title": "t",
        "body": "b",
        "sender": "system",
        "recipients": ["jvican"],
    }
    base.update(fields)
    return Event(**base)  # type: ignore[arg-type]


def test_abstract() -> None:
    with pytest.raises(TypeError):
        EventFilter()  # type: ignore[abstract]


def test_and_truth_table() -> None:
    f = WithEventType("user") & WithSender("system") & WithRecipients(["jvican"])
    assert f(event()) is True
    assert f(event(event_type="system")) is False
    assert f(event(sender="jvican")) is False
    assert f(event(recipients=["tom"])) is False
    assert f(event(recipients=["jvican", "tom"])) is False


def test_or_truth_table() -> None:
    tomorrow = NOW + timedelta(days=1)
    f = BeforeDate(tomorrow) | WithId("1234") | Not(Expired())
    e = event()
    assert f(e) is True
    e["timestamp"] = tomorrow + timedelta(days=1)
    assert f(e) is True
    e["event_id"] = "4321"
    assert f(e) is True
    e["expiration_datetime"] = NOW - timedelta(hours=1)
    assert f(e) is False


def test_xor_truth_table() -> None:
    f = AfterDate(NOW + timedelta(days=2)) ^ WithId("1234")
    e = event()
    assert f(e) is True
    e["timestamp"] = NOW + timedelta(days=3)
    assert f(e) is False
    e["event_id"] = "4321"
    assert f(e) is True
    e["timestamp"] = NOW
    assert f(e) is False


def test_invert_and_not_agree() -> None:
    e = event()
    assert (~WithSender("system"))(e) is False
    assert Not(WithSender("x"))(e) is True
    assert RootNot is Not
    assert ~WithSender("x") == Not(WithSender("x"))


def test_dates_are_strict_and_accept_naive() -> None:
    moment = datetime(2024, 1, 1, 12, tzinfo=UTC)
    at = event(timestamp=moment)
    assert BeforeDate(moment)(at) is False and AfterDate(moment)(at) is False
    assert BeforeDate(moment + timedelta(microseconds=1))(at) is True
    assert AfterDate(moment - timedelta(microseconds=1))(at) is True
    local_now = datetime.now()
    assert Not(BeforeDate(local_now))(event()) is True
    with pytest.raises(TypeError):
        BeforeDate("2024-01-01")  # type: ignore[arg-type]


def test_expired_without_expiration_never_expires() -> None:
    assert Expired()(event()) is False
    assert Expired()(event(expiration_datetime=NOW - timedelta(seconds=1))) is True
    assert Expired()(event(expiration_datetime=NOW + timedelta(days=1))) is False


def test_recipient_tag_and_field_filters() -> None:
    e = event(recipients=["tom", "tim"], tags=["urgent"], priority="high")
    assert WithRecipient("tim")(e) is True and WithRecipient("bob")(e) is False
    assert WithRecipients(["tim", "tom"])(e) is True and WithRecipients(["tim"])(e) is False
    assert WithTag("urgent")(e) is True and WithTag("low")(e) is False
    assert WithField("priority", "high")(e) is True
    assert WithField("priority", lambda v: v in {"high", "urgent"})(e) is True
    assert WithField("missing", None)(e) is False
    assert Always()(e) is True


def test_reprs_are_readable() -> None:
    f = WithEventType("test") & Not(BeforeDate(datetime(2024, 1, 1, tzinfo=UTC)))
    assert repr(f) == "(WithEventType('test') & ~BeforeDate('2024-01-01T00:00:00+00:00'))"
    assert repr(WithSender("a") | WithRecipients(["b", "a"])) == "(WithSender('a') | WithRecipients(['a', 'b']))"
    assert repr(WithField("p", 1) ^ Always()) == "(WithField('p', 1) ^ Always())"
    assert repr(Expired()) == "Expired()"


def test_compose_only_with_filters() -> None:
    with pytest.raises(TypeError, match="only with other filters"):
        WithId("1") & True  # type: ignore[operator]


def test_recipient_filters_take_integer_user_ids_as_their_decimal_string() -> None:
    # Events carry recipients as strings; Flask-Login's current_user.id is
    # often an integer.
    e = event(recipients=["1", "tim"])
    assert WithRecipient(1)(e) is True and WithRecipient(2)(e) is False
    assert WithRecipient("1")(e) is True
    assert WithRecipients([1, "tim"])(e) is True and WithRecipients([1])(e) is False
    assert WithRecipient(True)(event(recipients=["True"])) is False  # type: ignore[arg-type]
