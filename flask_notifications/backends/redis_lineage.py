"""What a Redis stream's ``XINFO STREAM`` says about the losses of a reader:
whether the entries after a position were trimmed or deleted, whether the
stream is still the one a position came from, and a check of many streams
at once, on the server, for the subscription's lineage sweep
(:class:`~flask_notifications.backends.redis_subscription.RedisSubscription`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis

from ..errors import BackendError
from .base import Message, parse_id
from .redis_client import decode, field

# KEYS: streams. ARGV: the reader's position in each. Returns the (1-based)
# indexes of the streams whose last entry is not at the position: entries
# that no ring announced, or a stream that is gone or is another one.
_CHANGED = """
local changed = {}
for i, key in ipairs(KEYS) do
    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    if #last == 0 then
        if ARGV[i] ~= '0-0' then
            changed[#changed + 1] = i
        end
    elseif last[1][1] ~= ARGV[i] then
        changed[#changed + 1] = i
    end
end
return changed
"""


def entries_of(entries: Any) -> list[Any]:
    """The ``(id, fields)`` pairs of one stream in an XREAD reply; RESP3
    replies (redis-py, ``protocol=3``) nest them one level deeper."""
    pairs: list[Any] = list(entries or ())
    if pairs and isinstance(pairs[0], list) and pairs[0] and isinstance(pairs[0][0], list | tuple):
        return [entry for group in pairs for entry in group]
    return pairs


def read_rings(reply: Any, info: Any, before: str) -> tuple[list[str], str, bool]:
    """What a wait on the rings stream read: the ``XREAD`` ``reply`` from
    ``before``, then the stream's ``XINFO STREAM`` (or the error it raised).

    :return: the channels rung, the position to wait from next, and whether
        rings may have been missed (the stream was trimmed past ``before``,
        or is gone, or is another stream whose ids are behind it).
    """
    if isinstance(reply, Mapping):  # RESP3
        reply = list(reply.items())
    rings = [entry for _, entries in reply or () for entry in entries_of(entries)]
    last = decode(rings[-1][0]) if rings else before
    after = parse_id(before)
    missed = False
    if isinstance(info, Exception):
        # No rings stream: gone (a restart, a deletion), or never written.
        missed, last = after > (0, 0), last if rings else "0-0"
    elif isinstance(info, Mapping):
        first, newest = first_id(info), decode(info_field(info, "last-generated-id"))
        if parse_id(newest) < after:
            missed, last = True, newest
        elif first is not None and first > after > (0, 0):
            missed = True
    return [field(fields, "h") for _, fields in rings], last, missed


def info_field(info: Mapping[Any, Any], name: str) -> Any:
    """One field of an ``XINFO STREAM`` reply, whichever way it is decoded."""
    return info.get(name, info.get(name.encode()))


def lineage_script(client: Any) -> Any:
    """The check of many streams at once (:func:`changed_streams`), registered on ``client``."""
    return client.register_script(_CHANGED)


def changed_streams(script: Any, client: Any, keys: Sequence[str], positions: Sequence[str]) -> list[int]:
    """Which of the streams ``keys`` do not end at the reader's ``positions``
    in them: one script (from :func:`lineage_script`) on ``client``, in one
    round trip. Such a stream has entries no ring announced (a publisher
    that does not ring), or is gone, or is another stream under the key.

    :return: indexes into ``keys``.
    """
    return [int(index) - 1 for index in script(keys=list(keys), args=list(positions), client=client)]


def first_id(info: Mapping[Any, Any]) -> tuple[int, int] | None:
    """The stream's first entry id according to ``XINFO STREAM``, if any."""
    first = info_field(info, "recorded-first-entry-id")
    if first is None or parse_id(decode(first)) == (0, 0):
        entry = info_field(info, "first-entry")
        first = entry[0] if entry else None
    return None if first is None else parse_id(decode(first))


def explains_missing(info: Mapping[Any, Any], after: tuple[int, int], added_at: int | None) -> bool:
    """Whether the stream ``info`` describes may have lost its entry
    ``after`` itself: ``XDEL`` removed an entry at least as new, or trimming
    took it, which removes the oldest entries first, so ``after`` is older
    than the first entry and the stream removed at least as many entries as
    it had added up to ``after`` (``added_at``, when known). A stream
    that cannot explain it is another one under the same key, as after a
    restart of a Redis without persistence, however many entries it holds."""
    deleted = info_field(info, "max-deleted-entry-id")
    if deleted is not None and parse_id(decode(deleted)) >= after:
        return True
    first = first_id(info)
    if first is not None and first <= after:
        return False  # within the stream, and no XDEL reached it
    added = info_field(info, "entries-added")
    if added is None or added_at is None:
        return True  # Redis < 7 keeps no count: trimming may explain it
    removed = int(added) - int(info_field(info, "length") or 0)
    return removed >= added_at


def trimmed_after(info: Mapping[Any, Any], after: tuple[int, int]) -> bool:
    """Whether the stream described by ``XINFO STREAM`` lost an entry newer
    than ``after``, or cannot tell because ``after`` is not one of its ids."""
    deleted = info_field(info, "max-deleted-entry-id")
    if deleted is not None and parse_id(decode(deleted)) > after:
        return True  # XDEL removed a later entry
    length = int(info_field(info, "length") or 0)
    added = info_field(info, "entries-added")
    lost_some = added is None or int(added) > length
    if length == 0:
        last = info_field(info, "last-generated-id")
        return last is not None and parse_id(decode(last)) > after
    first = first_id(info)
    if first is None or first <= after:
        return False
    # Everything before the first entry was trimmed, or after_id belongs to
    # an earlier life of the stream (expired, or a restart without
    # persistence): either way the reader may have missed events.
    return after > (0, 0) or lost_some


def after_read(
    position: str, info: Any, got: list[Message], previous: int | None, present: bool | None = None
) -> tuple[str, int | None, str | None]:
    """Judge one stream's read after ``position`` from its ``XINFO STREAM``
    (``info``, or the error it raised): the entries read (``got``), the
    stream's ``entries-added`` at the last read (``previous``), and whether
    the stream still holds the entry at ``position`` (``present``, ``None``
    when not asked).

    :return: the position to read after next, the ``entries-added`` to keep,
        and the reason of a loss: ``"reset"`` (the stream is gone, or is
        another one under the key: read it from its start), ``"overrun"``
        (entries were trimmed before they were read), or ``None``.
    :raises BackendError: the ``XINFO`` failed for another reason than a
        missing stream.
    """
    after = parse_id(position)
    if isinstance(info, redis.exceptions.ResponseError):
        # No such stream: it expired, was deleted, or the server
        # restarted empty. Events past the position may have gone with it.
        return "0-0", 0, "reset" if after > (0, 0) else None
    if isinstance(info, Exception):
        raise BackendError(f"Redis subscription failed: {info}")
    last_generated = decode(info_field(info, "last-generated-id"))
    raw_added = info_field(info, "entries-added")
    added = None if raw_added is None else int(raw_added)
    if (
        parse_id(last_generated) < after
        or (added is not None and previous is not None and added < previous)
        or (present is False and not explains_missing(info, after, previous))
    ):
        # The ids went backwards, or the entry the position names is
        # gone although nothing removed it: another stream under the key.
        return "0-0", 0, "reset"
    reason = None
    if added is not None and previous is not None:
        if added - previous > len(got):
            reason = "overrun"
    elif after > (0, 0):
        # Without the counter (Redis < 7): the position is no longer kept.
        first = info_field(info, "first-entry")
        if first and parse_id(decode(first[0])) > after:
            reason = "overrun"
    if got:
        position = got[-1].id
    elif reason is not None:
        position = last_generated
    return position, added, reason


def after_failover(position: str, info: Any, got: list[Message]) -> tuple[str, int | None]:
    """The first read after ``position`` on a master promoted by a
    failover: whatever the old master held after ``position`` and did not
    replicate is gone, and nothing can tell whether there was any (a
    ``"failover"`` loss, always). Take the new master's counters, and read
    on after ``position`` (or after the new master's last id, if it never
    got that far).

    :return: the position to read after next, and the ``entries-added`` to keep.
    :raises BackendError: the ``XINFO`` failed for another reason than a
        missing stream.
    """
    if isinstance(info, redis.exceptions.ResponseError):
        return (got[-1].id if got else "0-0"), len(got)
    if isinstance(info, Exception):
        raise BackendError(f"Redis subscription failed: {info}")
    last = decode(info_field(info, "last-generated-id"))
    raw_added = info_field(info, "entries-added")
    if got:
        position = got[-1].id
    elif parse_id(last) < parse_id(position):
        position = last
    return position, None if raw_added is None else int(raw_added)
