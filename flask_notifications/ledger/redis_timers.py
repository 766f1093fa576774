"""The due-table of the Redis ledger: timers and digest windows.

Every key shares the hash tag ``{timers}``, so the scripts that touch a timer
and its digest together run on one Redis Cluster slot:

- ``<prefix>:{timers}:due``, a sorted set: timer id -> when it is due (ms);
- ``<prefix>:{timers}:rec``, ``:ver`` and ``:att``, hashes: each timer's
  record, version and attempts;
- ``<prefix>:{timers}:open:<group>`` (a hash, item id -> item) and
  ``<prefix>:{timers}:order:<group>`` (a list of item ids): a digest group's
  open window;
- ``<prefix>:{timers}:sealed:<group>:<version>`` and
  ``<prefix>:{timers}:sorder:<group>:<version>``: that window once sealed,
  renamed from the open keys in one step;
- ``<prefix>:{timers}:seen:<group>``, a sorted set: the ids of the items the
  group flushed -> when they are forgotten (``digest_seen_ttl`` later), so
  that a retried delivery does not add an item of a flushed window again.

Each step is one Lua script, so a claim, a seal or a finish is atomic.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..backends.redis_client import decode
from .base import DigestAdd, DueTimer

# The start of the steps that act only on the version of the timer they
# were given (KEYS[3] holds the versions): a timer set again meanwhile is
# left alone, and the step returns 0.
_SAME_VERSION = """
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
    return 0
end
"""
_SET = """
if ARGV[5] == '0' and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
    return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[1], 0)
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
_CLAIM = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for i = 1, #found, 2 do
    local id = found[i]
    local record = redis.call('HGET', KEYS[2], id)
    if record then
        local attempts = redis.call('HINCRBY', KEYS[4], id, 1)
        redis.call('ZADD', KEYS[1], ARGV[2], id)
        claimed[#claimed + 1] = id
        claimed[#claimed + 1] = record
        claimed[#claimed + 1] = redis.call('HGET', KEYS[3], id)
        claimed[#claimed + 1] = found[i + 1]
        claimed[#claimed + 1] = tostring(attempts)
    else
        redis.call('ZREM', KEYS[1], id)
    end
end
return claimed
"""
_RETRY = (
    _SAME_VERSION
    + """redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
)
_REMOVE = """
if ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
    return 0
end
local found = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
for i = 5, #KEYS do
    redis.call('DEL', KEYS[i])
end
return found
"""
_ADD = """
local seen = redis.call('ZSCORE', KEYS[7], ARGV[5])
if seen and tonumber(seen) > tonumber(ARGV[8]) then
    return 'duplicate'
end
local version = redis.call('HGET', KEYS[3], ARGV[1])
if version and redis.call('HEXISTS', ARGV[9] .. version, ARGV[5]) == 1 then
    return 'duplicate'
end
local opened = false
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
    redis.call('HSET', KEYS[4], ARGV[1], 0)
    redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
    opened = true
    if ARGV[7] == '1' then
        return 'first'
    end
end
if redis.call('HSETNX', KEYS[5], ARGV[5], ARGV[6]) == 0 then
    return 'duplicate'
end
redis.call('RPUSH', KEYS[6], ARGV[5])
if opened then
    return 'opened'
end
return 'added'
"""
_SEAL = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
    return false
end
if redis.call('EXISTS', KEYS[5]) == 0 then
    if redis.call('EXISTS', KEYS[3]) == 1 then
        redis.call('RENAME', KEYS[2], KEYS[4])
        redis.call('RENAME', KEYS[3], KEYS[5])
    end
end
local ids = redis.call('LRANGE', KEYS[5], 0, -1)
local items = {}
for _, id in ipairs(ids) do
    items[#items + 1] = id
    items[#items + 1] = redis.call('HGET', KEYS[4], id)
end
return items
"""
_FINISH = (
    _SAME_VERSION
    + """local ids = redis.call('LRANGE', KEYS[8], 0, -1)
for _, id in ipairs(ids) do
    redis.call('ZADD', KEYS[9], ARGV[7], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', ARGV[6])
if #ids > 0 then
    redis.call('PEXPIRE', KEYS[9], ARGV[8])
end
redis.call('DEL', KEYS[7], KEYS[8])
if redis.call('EXISTS', KEYS[6]) == 1 or ARGV[5] == '1' then
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
    redis.call('HSET', KEYS[4], ARGV[1], 0)
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[3], ARGV[1])
    redis.call('HDEL', KEYS[4], ARGV[1])
end
return 1
"""
)


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisDueTable:
    """The due-table methods of :class:`~flask_notifications.ledger.redis.RedisLedger`."""

    key_prefix: str
    client: Any
    #: Seconds a digest group remembers an item after flushing it, so a
    #: retried delivery does not add it again (the longest a delivery is
    #: retried or redelivered after its first run added it).
    digest_seen_ttl: float = 6 * 3600.0

    if TYPE_CHECKING:

        def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any: ...

        def _run_script(self, what: str, script: str, keys: list[str], *args: Any) -> Any: ...

    @property
    def _timer_keys(self) -> list[str]:
        base = f"{self.key_prefix}:{{timers}}"
        return [f"{base}:due", f"{base}:rec", f"{base}:ver", f"{base}:att"]

    def _group_keys(self, group: str) -> list[str]:
        base = f"{self.key_prefix}:{{timers}}"
        return [f"{base}:open:{group}", f"{base}:order:{group}"]

    def _sealed_keys(self, group: str, version: str) -> list[str]:
        base = f"{self.key_prefix}:{{timers}}"
        return [f"{base}:sealed:{group}:{version}", f"{base}:sorder:{group}:{version}"]

    def _sealed_prefix(self, group: str) -> str:
        """The sealed window's key of ``group`` without its version, which
        the add script completes (the key is on the slot of ``{timers}``)."""
        return f"{self.key_prefix}:{{timers}}:sealed:{group}:"

    def _seen_key(self, group: str) -> str:
        return f"{self.key_prefix}:{{timers}}:seen:{group}"

    def timer_set(self, timer_id: str, record: str, due_ms: int, version: str, *, replace: bool = True) -> bool:
        args = (timer_id, record, int(due_ms), version, "1" if replace else "0")
        return bool(self._run_script("timer", _SET, self._timer_keys, *args))

    def timer_claim(self, now_ms: int, until_ms: int, limit: int = 100) -> list[DueTimer]:
        flat = self._run_script("timer", _CLAIM, self._timer_keys, int(now_ms), int(until_ms), int(limit))
        return [
            DueTimer(
                decode(flat[i]), decode(flat[i + 1]), decode(flat[i + 2]), int(float(flat[i + 3])), int(flat[i + 4])
            )
            for i in range(0, len(flat), 5)
        ]

    def timer_retry(self, timer_id: str, version: str, due_ms: int) -> bool:
        return bool(self._run_script("timer", _RETRY, self._timer_keys, timer_id, version, int(due_ms)))

    def timer_finish(self, timer_id: str, version: str) -> bool:
        return bool(self._run_script("timer", _REMOVE, self._timer_keys, timer_id, version))

    def timer_cancel(self, timer_id: str) -> bool:
        found = self.timer_get(timer_id)
        keys = self._timer_keys + self._group_keys(timer_id)
        if found is not None:
            keys += self._sealed_keys(timer_id, found.version)
        return bool(self._run_script("timer", _REMOVE, keys, timer_id, ""))

    def timer_get(self, timer_id: str) -> DueTimer | None:
        due, rec, ver, att = self._timer_keys
        pipe = self.client.pipeline(transaction=True)
        pipe.zscore(due, timer_id)
        pipe.hget(rec, timer_id)
        pipe.hget(ver, timer_id)
        pipe.hget(att, timer_id)
        score, record, version, attempts = self._call("timer", pipe.execute)
        if record is None or version is None or score is None:
            return None
        return DueTimer(timer_id, decode(record), decode(version), int(score), int(attempts or 0))

    def timer_count(self) -> int:
        return int(self._call("timer", self.client.zcard, self._timer_keys[0]))

    def digest_add(self, timer: DueTimer, item_id: str, item: str, *, first_at_once: bool = False) -> DigestAdd:
        keys = [*self._timer_keys, *self._group_keys(timer.id), self._seen_key(timer.id)]
        args = (
            timer.id,
            timer.record,
            timer.version,
            int(timer.due_ms),
            item_id,
            item,
            "1" if first_at_once else "0",
            _now_ms(),
            self._sealed_prefix(timer.id),
        )
        return DigestAdd(decode(self._run_script("digest", _ADD, keys, *args)))

    def digest_seal(self, group: str, version: str) -> list[tuple[str, str]] | None:
        keys = [self._timer_keys[2], *self._group_keys(group), *self._sealed_keys(group, version)]
        flat = self._run_script("digest", _SEAL, keys, group, version)
        if flat is None:
            return None
        return [(decode(flat[i]), decode(flat[i + 1])) for i in range(0, len(flat), 2)]

    def digest_finish(self, group: str, version: str, next_due_ms: int, next_version: str, *, keep_open: bool) -> bool:
        keys = [*self._timer_keys, *self._group_keys(group), *self._sealed_keys(group, version), self._seen_key(group)]
        now, ttl = _now_ms(), int(self.digest_seen_ttl * 1000)
        args = (group, version, int(next_due_ms), next_version, "1" if keep_open else "0", now, now + ttl, ttl)
        return bool(self._run_script("digest", _FINISH, keys, *args))

    def digest_size(self, group: str) -> int:
        found = self.timer_get(group)
        pipe = self.client.pipeline(transaction=False)
        pipe.hlen(self._group_keys(group)[0])
        if found is not None:
            pipe.hlen(self._sealed_keys(group, found.version)[0])
        return sum(int(n) for n in self._call("digest", pipe.execute))
