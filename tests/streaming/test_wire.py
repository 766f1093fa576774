"""The SSE wire format against an independent WHATWG parser
(:mod:`tests.helpers.sse_client`): whatever goes into a field comes out unchanged, in
exactly one frame, or the encoder refuses it."""

from __future__ import annotations

import codecs
import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flask_notifications.backends.base import Message
from flask_notifications.errors import StreamFormatError
from flask_notifications.event import Event
from flask_notifications.streaming.wire import HEARTBEAT, encode_comment, encode_event, event_frame, parse_last_event_id
from tests.helpers.sse_client import Parser, SSEEvent

#: Characters that break naive encoders: every line end a parser might know,
#: NUL and other controls, a BOM, and the field separator.
NASTY = "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\ufeff: \t"
CONTROLS = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)])

nasty_text = st.text(alphabet=st.sampled_from(NASTY) | st.characters(codec="utf-8"), max_size=40)
clean_text = st.text(
    alphabet=st.sampled_from("\u2028\u2029\ufeff: \xa0") | st.characters(codec="utf-8", exclude_categories=["Cc"]),
    max_size=30,
)
dirty_text = st.builds(
    lambda before, control, after: before + control + after, clean_text, st.sampled_from(CONTROLS), clean_text
)


def arrived(data: str) -> str:
    """What SSE can carry of ``data``: line ends are joined as LF, since a
    frame has no way to say which line end split the data."""
    return re.sub("\r\n|\r", "\n", data)


def parse(payload: bytes, cuts: list[int] = ()) -> tuple[list[SSEEvent], Parser]:
    """Feed ``payload`` to a fresh parser, split at ``cuts``, as a stream."""
    parser = Parser()
    decoder = codecs.getincrementaldecoder("utf-8")()
    events: list[SSEEvent] = []
    start = 0
    for cut in sorted(set(cuts)) + [len(payload)]:
        events += parser.feed(decoder.decode(payload[start:cut], final=cut == len(payload)))
        start = cut
    return events, parser


@given(data=nasty_text, name=st.none() | clean_text, event_id=clean_text, cuts=st.lists(st.integers(0, 400)))
@example(data="a\r\nb\rc\nd\u2028e\x00f", name="x y", event_id="1-0", cuts=[3, 4])
@example(data="", name=None, event_id="", cuts=[])
@example(data="\r", name="", event_id=" lead", cuts=[1])
def test_a_frame_parses_back_to_exactly_its_fields(data: str, name: str | None, event_id: str, cuts: list[int]) -> None:
    payload = encode_event(data, event=name, id=event_id)
    events, parser = parse(b"retry: 10\n\n" + payload, cuts)
    assert events == [SSEEvent(name or "message", arrived(data), event_id)]
    assert parser.last_event_id == event_id


@given(frames=st.lists(st.tuples(nasty_text, st.none() | clean_text, clean_text), max_size=8))
def test_consecutive_frames_neither_merge_nor_split(frames: list[tuple[str, str | None, str]]) -> None:
    payload = b"".join(encode_event(data, event=name, id=eid) + HEARTBEAT for data, name, eid in frames)
    events, _ = parse(payload)
    assert events == [SSEEvent(name or "message", arrived(data), eid) for data, name, eid in frames]


@given(dirty=dirty_text)
@example(dirty="a\nid: forged")
@example(dirty="\x00")
@example(dirty="x\r")
def test_control_characters_in_a_name_or_id_are_refused(dirty: str) -> None:
    with pytest.raises(StreamFormatError, match="control character"):
        encode_event("data", event=dirty, id="1-0")
    with pytest.raises(StreamFormatError, match="control character"):
        encode_event("data", event="ok", id=dirty)


@pytest.mark.parametrize("retry", [-1, True, "10", 1.5, "1\n0"])
def test_a_retry_must_be_a_non_negative_integer(retry: object) -> None:
    with pytest.raises(StreamFormatError, match="retry"):
        encode_event(None, retry=retry)  # type: ignore[arg-type]


def test_lone_surrogates_are_refused_not_mangled() -> None:
    with pytest.raises(StreamFormatError, match="Unicode"):
        encode_event("\ud800")


def test_an_id_only_frame_sets_the_last_event_id_without_an_event() -> None:
    events, parser = parse(encode_event(None, retry=2500, id="5-1"))
    assert events == [] and parser.last_event_id == "5-1" and parser.retry == 2500


@given(text=nasty_text)
def test_a_comment_never_becomes_an_event(text: str) -> None:
    events, parser = parse(encode_comment(text) + encode_event("after", id="1-0"))
    assert events == [SSEEvent("message", "after", "1-0")]
    assert parser.comments


fields = st.text(alphabet=st.sampled_from(NASTY) | st.characters(codec="utf-8"), max_size=20)


@settings(max_examples=150)
@given(
    event_type=fields,
    title=fields,
    body=fields,
    sender=fields,
    recipients=st.lists(fields, max_size=3),
    tags=st.lists(fields, max_size=3),
    extra=st.dictionaries(fields, fields | st.lists(fields, max_size=2), max_size=3),
)
def test_any_event_streams_as_one_frame_with_its_exact_json(
    event_type: str,
    title: str,
    body: str,
    sender: str,
    recipients: list[str],
    tags: list[str],
    extra: dict[str, object],
) -> None:
    extra = {key: value for key, value in extra.items() if key not in Event.__init__.__code__.co_varnames}
    event = Event(None, "type", title, body, sender=sender, recipients=recipients, tags=tags, **extra)
    # Event refuses control characters in event_type, but another publisher
    # on the same backend may not: the frame must survive any type.
    published = {**event.to_dict(), "event_type": event_type}
    message = Message("event-hub-x", "1700000000000-3", json.dumps(published, ensure_ascii=False))
    events, _ = parse(event_frame(message, published))
    assert len(events) == 1
    (received,) = events
    assert json.loads(received.data) == published
    assert received.last_event_id == "1700000000000-3"
    clean = event_type and not any(char in CONTROLS for char in event_type)
    assert received.type == (event_type if clean else "message")
    if clean:
        assert Event.from_json(received.data)["event_type"] == event_type


@given(value=st.text(max_size=60))
@example(value="1-0")
@example(value="123-")
@example(value="1-0\n")
@example(value="١-٠")
def test_last_event_id_is_an_id_or_refused(value: str) -> None:
    try:
        parsed = parse_last_event_id(value)
    except StreamFormatError as exc:
        assert "Last-Event-ID" in str(exc)
        return
    assert parsed is None if value == "" else parsed == value
    if parsed is not None:
        head, tail = parsed.split("-")
        assert head.isascii() and head.isdigit() and tail.isascii() and tail.isdigit()
