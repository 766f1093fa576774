"""The Redis ledger: the Redis backend's, on the same client by default.

A claim is the key ``<prefix>:claim:<key>``, whose value is its owner's
token, or ``done`` once the work is recorded; its expiry is the claim's.
Each step that checks the owner is a Lua script, so an owner whose claim
expired cannot touch the next owner's.

The dead letters are the stream ``<prefix>:{dead-letters}`` (trimmed to
``NOTIFICATIONS_DEAD_LETTER_LIMIT``), and their retry states the hash
``<prefix>:{dead-letters}:retry``. They share a hash tag, so the scripts
touching both run on one Redis Cluster slot. These are the keys the Redis
backend wrote before the ledger was split off, so existing data stays valid.

The outbox is the hash ``<prefix>:{outbox}`` (entry id -> record) and the
sorted set ``<prefix>:{outbox}:due`` (entry id -> when it is due, in
milliseconds), changed together by Lua scripts, on one slot.

The due-table of timers and digests is under the hash tag ``{timers}``; see
:mod:`~flask_notifications.ledger.redis_timers`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis

from ..backends.base import parse_id
from ..backends.redis_client import (
    RedisClient,
    answers_ping,
    client_or_url,
    decode,
    field,
    guarded,
    is_client,
    is_cluster,
)
from ..errors import LedgerUnavailableError
from .base import Claim, Ledger
from .choice import is_redis_url
from .redis_timers import RedisDueTable

if TYPE_CHECKING:
    from flask import Flask

    from ..backends.base import Backend

_DONE = b"done"


# A claim's value is its owner's token, or "done"; each script checks the
# owner and acts in one step.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_COMPLETE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and holder ~= 'done' then
    return 0
end
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# A dead letter's retry state lives in a hash beside the letters' stream,
# set only while the letter is in the stream.
_MARK = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
    return false
end
local state = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if state == ARGV[2] then
    if ARGV[3] == '' then
        redis.call('HDEL', KEYS[2], ARGV[1])
    else
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
    end
    return ARGV[3]
end
return state
"""
_REMOVE_LETTER = """
local found = redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return found
"""

# The outbox: a hash of records and a sorted set of when each is due.
_OUTBOX_ADD = """
if ARGV[2] ~= '' then
    redis.call('HDEL', KEYS[1], ARGV[2])
    redis.call('ZREM', KEYS[2], ARGV[2])
end
for i = 3, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
end
return 1
"""
_OUTBOX_TAKE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local taken = {}
for _, id in ipairs(ids) do
    local record = redis.call('HGET', KEYS[1], id)
    if record then
        redis.call('ZADD', KEYS[2], ARGV[2], id)
        taken[#taken + 1] = id
        taken[#taken + 1] = record
    else
        redis.call('ZREM', KEYS[2], id)
    end
end
return taken
"""
_OUTBOX_POSTPONE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
_OUTBOX_REMOVE = """
local removed = 0
for i = 1, #ARGV do
    redis.call('ZREM', KEYS[2], ARGV[i])
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
end
return removed
"""


def _refused(exc: BaseException | None) -> bool:
    """Whether Redis answered a script with an error: it refuses a script
    that would write before running it (OOM, READONLY, MISCONF, NOPERM),
    so nothing was written. NOSCRIPT is not a refusal: the script is loaded
    and run again."""
    return isinstance(exc, redis.exceptions.ResponseError) and not isinstance(exc, redis.exceptions.NoScriptError)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisLedger(RedisDueTable, Ledger):
    """Claims and dead letters on Redis (one server, Sentinel or Cluster).

    :param client: a ``redis.Redis`` (or ``RedisCluster``) client; built from
        ``url`` if ``None``.
    :param url: the server's URL, used when no client is given, in any form
        :func:`~flask_notifications.backends.redis_client.client_from_url`
        accepts.
    :param key_prefix: prefix of every key this ledger writes.
    :param dead_letter_limit: dead letters kept (approximately: the stream
        is trimmed by whole nodes).
    """

    alias = "redis"

    def __init__(
        self,
        client: RedisClient | None = None,
        *,
        url: str = "redis://localhost:6379/0",
        key_prefix: str = "notifications",
        dead_letter_limit: int = 10000,
    ) -> None:
        self._owns_client = client is None
        self.client: Any = client_or_url(client, url)
        self.key_prefix = key_prefix
        self.dead_letter_limit = dead_letter_limit
        self.cluster = is_cluster(self.client)
        self._scripts: dict[str, Any] = {}

    @classmethod
    def from_config(cls, app: Flask, *, backend: Backend | None = None, broker: Any = None) -> RedisLedger:
        """The server of ``NOTIFICATIONS_LEDGER_URL`` (or the older
        ``NOTIFICATIONS_AMQP_LEDGER_URL``) when it is a Redis URL; else the
        client of the Redis backend, or the ``broker`` client; else
        ``NOTIFICATIONS_REDIS_URL`` or ``REDIS_URL``."""
        config = app.config
        options = {
            "key_prefix": config["NOTIFICATIONS_KEY_PREFIX"],
            "dead_letter_limit": config["NOTIFICATIONS_DEAD_LETTER_LIMIT"],
        }
        url = config.get("NOTIFICATIONS_LEDGER_URL") or config.get("NOTIFICATIONS_AMQP_LEDGER_URL")
        if is_redis_url(url):
            return cls(url=str(url), **options)
        client = getattr(backend, "client", None)
        for candidate in (client, broker):
            if is_client(candidate):
                return cls(candidate, **options)
        fallback = config.get("NOTIFICATIONS_REDIS_URL") or config.get("REDIS_URL") or "redis://localhost:6379/0"
        return cls(url=fallback, **options)

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        return guarded(what, func, *args, **kwargs)

    def _run_script(self, what: str, script: str, keys: list[str], *args: Any) -> Any:
        registered = self._scripts.get(script)
        if registered is None:
            # EVALSHA, loading the script again after a restart of Redis.
            registered = self._scripts[script] = self.client.register_script(script)
        return self._call(what, registered, keys=keys, args=list(args))

    # -- claims ---------------------------------------------------------------

    def _claim_key(self, key: str) -> str:
        return f"{self.key_prefix}:claim:{key}"

    def claim(self, key: str, token: str, timeout: float) -> Claim:
        full = self._claim_key(key)
        if self._call("claim", self.client.set, full, token, nx=True, px=_ms(timeout)):
            return Claim.ACQUIRED
        state = self._call("claim", self.client.get, full)
        return Claim.DONE if state is not None and state in (_DONE, "done") else Claim.BUSY

    def _script(self, script: str, key: str, *args: Any) -> int:
        return int(self._run_script("claim", script, [self._claim_key(key)], *args))

    def extend(self, key: str, token: str, timeout: float) -> bool:
        return bool(self._script(_EXTEND, key, token, _ms(timeout)))

    def complete(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._script(_COMPLETE, key, token, _ms(ttl)))

    def release(self, key: str, token: str) -> bool:
        return bool(self._script(_RELEASE, key, token))

    # -- dead letters ---------------------------------------------------------

    @property
    def _dead_key(self) -> str:
        return f"{self.key_prefix}:{{dead-letters}}"

    @property
    def _marks_key(self) -> str:
        return f"{self.key_prefix}:{{dead-letters}}:retry"

    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        letter_id = self._call(
            "dead letter",
            self.client.xadd,
            self._dead_key,
            {"r": json.dumps(dict(record))},
            maxlen=self.dead_letter_limit,
            approximate=True,
        )
        return decode(letter_id)

    def _letters(self, start: str, end: str) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=True)
        pipe.xrange(self._dead_key, min=start, max=end)
        if start == end:
            pipe.hmget(self._marks_key, [start])
        else:
            pipe.hgetall(self._marks_key)
        entries, marks = self._call("dead letter", pipe.execute)
        states = {start: marks[0]} if start == end else dict(marks)
        states = {decode(k): decode(v) for k, v in states.items() if v is not None}
        letters = [{**json.loads(field(fields, "r")), "id": decode(eid)} for eid, fields in entries]
        for letter in letters:
            if letter["id"] in states:
                letter["retry"] = states[letter["id"]]
        if start != end:
            # Marks of letters trimmed from the stream (its length bound).
            stale = set(states) - {letter["id"] for letter in letters}
            if stale:
                self._call("dead letter", self.client.hdel, self._marks_key, *stale)
        return letters

    def dead_letters(self) -> list[dict[str, Any]]:
        return self._letters("-", "+")

    def dead_letter_count(self) -> int:
        return int(self._call("dead letter", self.client.xlen, self._dead_key))

    def get_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        try:
            parse_id(letter_id)
        except ValueError:
            return None
        found = self._letters(letter_id, letter_id)
        return found[0] if found else None

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        found = self.get_dead_letter(letter_id)
        if found is None:
            return None
        keys = [self._dead_key, self._marks_key]
        if not self._run_script("dead letter", _REMOVE_LETTER, keys, letter_id):
            return None
        return found

    def mark_dead_letter(self, letter_id: str, expected: str, state: str) -> str | None:
        try:
            parse_id(letter_id)
        except ValueError:
            return None
        found = self._run_script("dead letter", _MARK, [self._dead_key, self._marks_key], letter_id, expected, state)
        return None if found is None else decode(found)

    # -- outbox ---------------------------------------------------------------

    @property
    def _outbox_keys(self) -> list[str]:
        return [f"{self.key_prefix}:{{outbox}}", f"{self.key_prefix}:{{outbox}}:due"]

    def outbox_add(self, entries: Mapping[str, str], due_ms: int, *, remove: str | None = None) -> None:
        args: list[Any] = [int(due_ms), remove or ""]
        for entry_id, record in entries.items():
            args += [entry_id, record]
        self._run_script("outbox", _OUTBOX_ADD, self._outbox_keys, *args)

    def outbox_add_begin(self, entries: Mapping[str, str], due_ms: int) -> Callable[[], None]:
        """Write the ``EVALSHA`` of :meth:`outbox_add` on a connection of the
        client's pool, and read its reply only in the call returned: the
        caller's next round trip (``send()``'s enqueue) overlaps this one.

        Taking a connection and writing the command are tried as the
        client's retry policy says; when they fail, the server has not read
        the whole command, so nothing was written
        (:class:`~flask_notifications.errors.LedgerUnavailableError`). A reply
        that does not come, or an error in its place, raises from the call
        returned, once the plain :meth:`outbox_add` (which writes the same
        entries again, changing nothing if they were written) failed too:
        the write may have been made. On a cluster the write is the plain
        call, made here, and its failure is raised by the call returned."""
        if self.cluster:
            return super().outbox_add_begin(entries, due_ms)
        script = self._scripts.get(_OUTBOX_ADD)
        if script is None:
            # Its SHA is known without asking the server; a server that
            # does not know the script answers NOSCRIPT, and finish()
            # loads it.
            script = self._scripts[_OUTBOX_ADD] = self.client.register_script(_OUTBOX_ADD)
        args: list[Any] = [int(due_ms), ""]
        for entry_id, record in entries.items():
            args += [entry_id, record]
        pool = self.client.connection_pool
        command = ("EVALSHA", script.sha, len(self._outbox_keys), *self._outbox_keys, *args)

        def connect_and_write() -> Any:
            try:
                conn = pool.get_connection()
            except TypeError:  # redis-py before 5.3 wants a command name
                conn = pool.get_connection("EVALSHA")
            try:
                conn.send_command(*command)
            except BaseException:
                # The command did not go out whole: the server drops what
                # it read of it with the connection. A timeout or a kill of
                # the caller's greenlet gives the connection back, closed.
                conn.disconnect()
                pool.release(conn)
                raise
            return conn

        retry = self.client.get_retry()
        try:
            if retry is None:
                conn = connect_and_write()
            else:
                conn = retry.call_with_retry(connect_and_write, lambda error: None)
        except redis.exceptions.RedisError as exc:
            raise LedgerUnavailableError(f"Redis outbox could not be reached: {exc}") from exc

        def finish() -> None:
            try:
                conn.read_response()
            except redis.exceptions.RedisError as exc:
                if _refused(exc):
                    # The answer to this one command, written once.
                    pool.release(conn)
                    raise LedgerUnavailableError(f"Redis outbox refused the record: {exc}") from exc
                if isinstance(exc, redis.exceptions.NoScriptError):
                    pool.release(conn)
                    # The script is new to the server (it restarted): the
                    # plain call loads it and writes the entries.
                    self.outbox_add(entries, due_ms)
                    return
                conn.disconnect()
                pool.release(conn)
                # The reply was lost: the plain call writes the same entries
                # again, which changes nothing if they were written. Its
                # failure, whatever it says, leaves the first write unknown.
                self.outbox_add(entries, due_ms)
                return
            except BaseException:
                conn.disconnect()
                pool.release(conn)
                raise
            pool.release(conn)

        return finish

    def outbox_take(self, now_ms: int, until_ms: int, limit: int = 100) -> list[tuple[str, str]]:
        flat = self._run_script("outbox", _OUTBOX_TAKE, self._outbox_keys, int(now_ms), int(until_ms), int(limit))
        return [(decode(flat[i]), decode(flat[i + 1])) for i in range(0, len(flat), 2)]

    def outbox_postpone(self, entry_id: str, due_ms: int) -> bool:
        return bool(self._run_script("outbox", _OUTBOX_POSTPONE, self._outbox_keys, entry_id, int(due_ms)))

    def outbox_remove(self, entry_id: str) -> bool:
        return bool(self._run_script("outbox", _OUTBOX_REMOVE, self._outbox_keys, entry_id))

    def outbox_remove_many(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        return int(self._run_script("outbox", _OUTBOX_REMOVE, self._outbox_keys, *entry_ids))

    def outbox_size(self) -> int:
        return int(self._call("outbox", self.client.hlen, self._outbox_keys[0]))

    # -- lifecycle ------------------------------------------------------------

    def ping(self) -> bool:
        return answers_ping(self.client)

    def close(self) -> None:
        # A client shared with the Redis backend is the backend's to close.
        if self._owns_client:
            self.client.close()
