"""Hostile input: whatever reaches ``send()`` or ``Event.from_json``, the only
outcomes are a valid event or :class:`InvalidEventError`, and nothing is ever
half-delivered. Nothing in the pipeline unpickles.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.exceptions import ContentDisallowed

from flask_notifications import Notifications
from flask_notifications.consumers.consumer import EventConsumer
from flask_notifications.errors import InvalidEventError
from flask_notifications.event import FIELDS, Event
from flask_notifications.worker.messages import DISPATCH_TASK
from tests.helpers import EXAMPLES, WorkerFactory, make_config, report, wait_for

pytestmark = pytest.mark.reliability

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# -- strategies -----------------------------------------------------------------

#: Any code point, lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
#: Names of extra fields that would trip code which passes fields as keywords.
keyword_names = st.sampled_from(
    ["self", "class", "def", "None", "lambda", "__class__", "__dict__", "__init__", "cls", "extra", "kwargs"]
)
offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
datetimes = st.datetimes(timezones=st.none() | offsets.map(timezone)) | st.sampled_from(
    [datetime.min, datetime.max, datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]
)
iso_texts = datetimes.map(lambda d: d.isoformat()) | st.sampled_from(
    [
        "",
        "now",
        "2020-13-45",
        "2020-01-01T25:00",
        "0000-01-01",
        "9999-12-31T23:59:59-23:59",
        "1" * 300,
        "2020-01-01\x00",
    ]
)
huge_ints = st.sampled_from([64, 400, 4300, 5000]).map(lambda digits: -(10**digits))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats()
    | any_text
    | st.binary(max_size=20)
    | datetimes
    | st.integers(1, 80_000).map(lambda n: "\u00e9" * n)
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(any_text | st.integers() | st.none(), inner, max_size=4)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=12,
)
#: Structures nested deeper than any validator should walk.
deep = st.integers(1, 3000).flatmap(
    lambda n: st.sampled_from([[]]).map(lambda leaf: _nest(leaf, n)) | st.just(_nest({}, n, key="k"))
)


def _nest(leaf: Any, depth: int, key: str | None = None) -> Any:
    value = leaf
    for _ in range(depth):
        value = {key: value} if key is not None else [value]
    return value


def _valid_event(**overrides: Any) -> dict[str, Any]:
    return Event(f"fuzz-{uuid.uuid4()}", "fuzz", "A title", "A body", sender="fuzzer", **overrides).to_dict()


@st.composite
def hostile_events(draw: st.DrawFn) -> Any:
    """An event dict with some fields replaced, removed or added, or
    something that is not an event at all."""
    shape = draw(st.sampled_from(["mutated", "mutated", "mutated", "extras", "not-a-dict"]))
    if shape == "not-a-dict":
        return draw(anything | deep)
    event = _valid_event()
    if shape == "extras":
        extras = draw(
            st.dictionaries(keyword_names | any_text | st.integers(), anything | deep, min_size=1, max_size=4)
        )
        for key, value in extras.items():
            if key not in FIELDS:
                event[key] = value
        return event
    for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        action = draw(st.sampled_from(["replace", "replace", "delete", "date"]))
        if action == "delete":
            event.pop(field)
        elif action == "date":
            event[field] = draw(datetimes | iso_texts)
        else:
            value = draw(anything | deep)
            # Keep ids unique, so deduplication by event id cannot hide a loss.
            event[field] = f"{value}-{uuid.uuid4()}" if field == "event_id" and isinstance(value, str) else value
    return event


#: Raw JSON fragments that a lax parser takes and a browser's JSON.parse does not.
json_fragments = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        '"\\ud800"',
        '"\\udfff\\ud800"',
        "1" * 5000,
        "[" * 5000,
        "{",
        '"',
    ]
) | st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n)
bad_bytes = st.sampled_from(
    [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b"\xc0\xaf"]
)


@st.composite
def hostile_json(draw: st.DrawFn) -> str | bytes:
    """Text or bytes near a valid event's JSON: a value swapped for a raw
    fragment, invalid UTF-8 spliced in, truncated, or junk."""
    text = json.dumps(_valid_event(), ensure_ascii=False, separators=(",", ":"))
    shape = draw(st.sampled_from(["fragment", "bytes", "truncated", "junk", "keywords"]))
    if shape == "fragment":
        field = draw(st.sampled_from([*FIELDS, "extra"]))
        fragment = draw(json_fragments)
        if field == "extra":
            return text[:-1] + f',"extra":{fragment}}}'
        head, _, tail = text.partition(f'"{field}":')
        # Swap the first value of the field for the fragment.
        value_end = json.JSONDecoder().raw_decode(tail)[1]
        return head + f'"{field}":' + fragment + tail[value_end:]
    if shape == "bytes":
        raw = text.encode("utf-8")
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(bad_bytes) + raw[at:]
    if shape == "truncated":
        return text[: draw(st.integers(0, len(text) - 1))]
    if shape == "keywords":
        keys = draw(st.lists(keyword_names, min_size=1, max_size=4, unique=True))
        return text[:-1] + "".join(f',"{key}":{json.dumps(draw(st.integers()))}' for key in keys) + "}"
    return draw(any_text | st.binary(max_size=64).map(bytes))


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (ValueError, RecursionError):
        # Too large or too deep for the encoder: raw JSON of the same spirit.
        return "[" * 5000 + "1" * 5000 + "]" * 5000


def _is_strict_json(text: str) -> bool:
    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return True


def _check_event(event: Event) -> None:
    """An accepted event survives the wire unchanged and in strict JSON."""
    text = event.to_json()
    assert _is_strict_json(text)
    assert Event.from_json(text).to_json() == text
    assert Event.from_json(text.encode("utf-8")).to_json() == text


# -- Event.from_json ----------------------------------------------------------


def test_from_json_accepts_an_event_or_raises_invalid_event_error() -> None:
    outcomes = {"valid": 0, "invalid": 0}

    @FUZZ
    @given(hostile_json() | hostile_events().map(_dumps))
    def check(payload: str | bytes) -> None:
        try:
            event = Event.from_json(payload)
        except InvalidEventError:
            outcomes["invalid"] += 1
            return
        _check_event(event)
        outcomes["valid"] += 1

    check()
    # Both outcomes must have been exercised, or the fuzzing proved nothing.
    assert outcomes["valid"] and outcomes["invalid"], outcomes
    report("Event.from_json fuzz", **outcomes)


def test_event_constructor_takes_any_extra_field_name() -> None:
    @FUZZ
    @given(st.dictionaries(keyword_names | any_text, anything, max_size=4))
    def check(extra: dict[str, Any]) -> None:
        extra = {key: value for key, value in extra.items() if key not in FIELDS}
        try:
            event = Event(None, "fuzz", "t", "b", **extra)
        except InvalidEventError:
            return
        _check_event(event)
        assert event.extra == extra

    check()


_BASE = _valid_event()
#: Inputs hypothesis found to escape as other exceptions (or as events that
#: could not be serialised), kept as fixed regressions.
FOUND = {
    "non-string field name": {**_BASE, 1: "x"},
    "infinity": {**_BASE, "x": float("inf")},
    "json infinity": json.dumps(_BASE)[:-1] + ',"x":1e999}',
    "huge integer": {**_BASE, "x": -(10**5000)},
    "naive datetime.min": {**_BASE, "timestamp": datetime.min},
    "datetime.max west of UTC": {**_BASE, "expiration_datetime": "9999-12-31T23:59:59-05:00"},
    "datetime.min east of UTC": {**_BASE, "timestamp": "0001-01-01T00:00:00+05:00"},
    "lone surrogate in an extra value": json.dumps(_BASE)[:-1] + ',"x":["\\ud800"]}',
    "lone surrogate in a nested key": {**_BASE, "x": {"\udfff": 1}},
}


@pytest.mark.parametrize("payload", FOUND.values(), ids=FOUND.keys())
def test_inputs_found_by_fuzzing_are_invalid_events(payload: Any) -> None:
    with pytest.raises(InvalidEventError):
        Event.from_json(payload) if isinstance(payload, str) else Event.from_dict(payload)


def test_extra_fields_may_be_named_self() -> None:
    event = Event(None, "t", "t", "b", self="me", cls="c", extra="e")
    assert event.extra == {"self": "me", "cls": "c", "extra": "e"}


# -- send() -------------------------------------------------------------------


class Recorder(EventConsumer):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def consume(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)


def _queued(redis_client: redis.Redis[bytes], app: Flask) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis_client.lrange(app.config["CELERY_TASK_DEFAULT_QUEUE"], 0, -1)]


@pytest.mark.redis
def test_send_enqueues_a_whole_event_or_nothing(
    notifications: Notifications, app: Flask, redis_client: redis.Redis[bytes], celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("Fuzz")
    recorder = hub.register_consumer(Recorder())
    queue = app.config["CELERY_TASK_DEFAULT_QUEUE"]
    # Every event sent, by delivery id: each send is a delivery of its own,
    # even when two share an event id (issue 11).
    accepted: dict[str, str] = {}
    outcomes = {"enqueued": 0, "expired": 0, "invalid": 0}

    @FUZZ
    @given(hostile_events() | hostile_json())
    def check(payload: Any) -> None:
        before = redis_client.llen(queue)
        try:
            result = notifications.send(payload)
        except InvalidEventError:
            outcomes["invalid"] += 1
            assert redis_client.llen(queue) == before
            return
        _check_event(result.event)
        if result.task_id is None:
            outcomes["expired"] += 1
            assert result.event.is_expired() and redis_client.llen(queue) == before
            return
        outcomes["enqueued"] += 1
        assert redis_client.llen(queue) == before + 1 and result.hub_ids == (hub.hub_id,)
        assert result.delivery_id is not None and result.delivery_id not in accepted
        accepted[result.delivery_id] = result.event.to_json()

    check()
    assert outcomes["enqueued"] and outcomes["invalid"], outcomes

    # Only JSON is on the wire: every message is a JSON dispatch of one event.
    messages = _queued(redis_client, app)
    assert len(messages) == outcomes["enqueued"]
    for message in messages:
        assert message["content-type"] == "application/json" and message["headers"]["task"] == DISPATCH_TASK
        (event_json, targets), _, _ = json.loads(base64.b64decode(message["body"]))
        assert _is_strict_json(event_json) and targets == [[hub.hub_id, *hub.consumer_names]]

    # A real worker delivers every accepted event, whole, exactly once.
    with celery_worker():
        wait_for(lambda: len(recorder.events) >= len(accepted), timeout=120)
        wait_for(lambda: redis_client.llen(queue) == 0)
    delivered = sorted(event.to_json() for event in recorder.events)
    assert delivered == sorted(accepted.values())
    assert notifications.dead_letters() == []
    report("send() fuzz", **outcomes, delivered=len(delivered), lost=len(accepted) - len(delivered))


@pytest.mark.redis
def test_events_above_the_size_limit_are_refused_at_send(
    notifications: Notifications, app: Flask, redis_client: redis.Redis[bytes]
) -> None:
    hub = notifications.create_hub("Sizes")
    hub.register_consumer(Recorder())
    queue = app.config["CELERY_TASK_DEFAULT_QUEUE"]
    limit = app.config["NOTIFICATIONS_MAX_EVENT_SIZE"]
    assert limit == 64 * 1024
    overhead = len(Event("x", "t", "t", "", sender="s").to_json().encode("utf-8"))

    fits = Event(None, "t", "t", "", sender="s")
    fits["body"] = "a" * (limit - len(fits.to_json().encode("utf-8")))
    assert len(fits.to_json().encode("utf-8")) == limit
    assert notifications.send(fits).task_id is not None

    # One byte too many, counted in UTF-8, in any field or as raw JSON.
    multibyte = Event(None, "t", "t", "", sender="s")
    multibyte["body"] = "\u20ac" * ((limit - overhead) // 3 + 1)
    too_big = [
        Event(None, "t", "t", "a" * (limit - overhead + 40), sender="s"),
        multibyte,
        Event(None, "t", "t", "", sender="s", blob=["x" * 1000] * 70),
        Event(None, "t", "t", "", sender="s", recipients=[f"user{i}" for i in range(10_000)]),
    ]
    for event in too_big:
        for payload in (event, event.to_dict(), event.to_json(), event.to_json().encode("utf-8")):
            with pytest.raises(InvalidEventError, match="NOTIFICATIONS_MAX_EVENT_SIZE"):
                notifications.send(payload)
    assert redis_client.llen(queue) == 1


# -- no pickle anywhere -------------------------------------------------------


class _Exploit:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.mark.redis
def test_a_pickled_task_message_is_refused_by_the_worker(
    notifications: Notifications,
    app: Flask,
    redis_url: str,
    redis_client: redis.Redis[bytes],
    celery_worker: WorkerFactory,
    tmp_path: Path,
) -> None:
    hub = notifications.create_hub("Pickles")
    recorder = hub.register_consumer(Recorder())
    celery = notifications.get_celery(app)
    assert celery.conf.accept_content == ["json"]
    queue = app.config["CELERY_TASK_DEFAULT_QUEUE"]
    proof = tmp_path / "unpickled"
    poisoned = _valid_event()

    # What an attacker with access to the broker would enqueue: our own task
    # names with a pickle body that runs code when it is loaded.
    with kombu.Connection(redis_url) as connection:
        producer = connection.Producer()
        for task_name, args in (
            (DISPATCH_TASK, (json.dumps(poisoned), [[hub.hub_id, *hub.consumer_names]], _Exploit(proof))),
            (hub.consumer_names[0], (hub.hub_id, json.dumps(poisoned), _Exploit(proof))),
        ):
            task_id = str(uuid.uuid4())
            producer.publish(
                (args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}),
                exchange="",
                routing_key=queue,
                serializer="pickle",
                headers={"lang": "py", "task": task_name, "id": task_id, "root_id": task_id, "retries": 0},
                declare=[kombu.Queue(queue)],
            )
    assert redis_client.llen(queue) == 2

    # Celery's loggers do not propagate to the root logger that caplog watches.
    refusals: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: refusals.append(record) if record.exc_info else None  # type: ignore[method-assign]
    consumer_logger = logging.getLogger("celery.worker.consumer.consumer")
    consumer_logger.addHandler(handler)
    legit = Event(None, "fuzz", "after the poison", "body")
    try:
        with celery_worker():
            notifications.send(legit)
            wait_for(lambda: recorder.events)
            wait_for(lambda: redis_client.llen(queue) == 0)
    finally:
        consumer_logger.removeHandler(handler)
    assert [event["event_id"] for event in recorder.events] == [legit["event_id"]]
    assert not proof.exists()
    assert [type(record.exc_info[1]) for record in refusals if record.exc_info] == [ContentDisallowed] * 2


@pytest.mark.redis
def test_a_celery_app_that_accepts_pickle_is_warned_about(
    redis_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    from celery import Celery

    celery = Celery(unique, broker=redis_url, set_as_current=False)
    celery.conf.accept_content = ["json", "pickle"]
    app = Flask("pickle_app")
    app.config.update(make_config(redis_url, unique))
    with caplog.at_level(logging.WARNING, logger="flask_notifications"):
        ext = Notifications(app, celery=celery)
    ext.get_backend(app).close()
    assert any("pickle" in record.getMessage() for record in caplog.records)
    # The extension's own Celery app accepts JSON only.
    own = Flask("json_app")
    own.config.update(make_config(redis_url, unique))
    ext = Notifications(own)
    assert ext.get_celery(own).conf.accept_content == ["json"]
    assert ext.get_celery(own).conf.task_serializer == "json"
    ext.get_backend(own).close()
