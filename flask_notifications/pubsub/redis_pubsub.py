"""The Redis backend, the default.

Every hub is a Redis stream (``<prefix>:hub:<hub id>``): ``XADD`` publishes and
records the history in one command, trimmed by count (``MAXLEN ~``) and by age
(``MINID ~``), and a subscriber reads with ``XREAD BLOCK`` from the last id it
saw, so nothing published between two reads is missed and a client can
resume from its ``Last-Event-ID``. One subscription is one connection, however
many channels it reads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis

from ..errors import BackendError
from .backend import Backend, Claim, History, Message, Subscription, parse_id

_DONE = b"done"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _field(fields: Mapping[Any, Any], name: str = "d") -> str:
    value = fields.get(name.encode(), fields.get(name))
    return _text(value) if value is not None else ""


def _redis_errors() -> tuple[type[Exception], ...]:
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class _RedisSubscription(Subscription):
    def __init__(self, backend: RedisPubSub) -> None:
        self._backend = backend
        self._positions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._closed = False

    def add(self, channel: str) -> None:
        # Resolve the current end of the stream now, so that everything
        # published after add() returns is read, even before the next XREAD.
        last = self._backend._last_id(channel)
        with self._lock:
            self._positions.setdefault(channel, last)
        self._wakeup.set()

    def remove(self, channel: str) -> None:
        with self._lock:
            self._positions.pop(channel, None)

    def get(self, timeout: float) -> list[Message]:
        with self._lock:
            positions = {self._backend._key(ch): pos for ch, pos in self._positions.items()}
        if not positions or self._closed:
            self._wakeup.wait(timeout)
            self._wakeup.clear()
            return []
        block_ms = max(1, int(min(timeout, self._backend.max_block) * 1000))
        try:
            reply = self._backend.client.xread(positions, block=block_ms)  # type: ignore[arg-type,unused-ignore]
        except _redis_errors() as exc:
            raise BackendError(f"Redis subscription failed: {exc}") from exc
        messages: list[Message] = []
        prefix_len = len(self._backend._key(""))
        with self._lock:
            for key, entries in reply or ():
                channel = _text(key)[prefix_len:]
                for entry_id, fields in entries:
                    message = Message(channel, _text(entry_id), _text(fields[b"d"] if b"d" in fields else fields["d"]))
                    messages.append(message)
                    if channel in self._positions:
                        self._positions[channel] = message.id
        return messages

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()


class RedisPubSub(Backend):
    """Pub/sub on Redis streams, with history, idempotency and dead letters.

    :param client: a ``redis.Redis`` client to use; built from ``url`` if
        ``None``. The documentation's ``init_app(..., broker=redis)`` passes it.
    :param url: the server's URL, used when no client is given.
    :param key_prefix: prefix of every key this backend writes.
    :param history_size: approximate number of events kept per hub.
    :param history_ttl: seconds an event is kept for replay; ``None`` keeps it
        until the size bound trims it.
    :param dead_letter_limit: dead letters kept.
    """

    alias = "redis"
    #: Longest single XREAD BLOCK, so new channels join a read promptly.
    max_block = 0.5

    def __init__(
        self,
        client: redis.Redis[bytes] | None = None,
        *,
        url: str = "redis://localhost:6379/0",
        key_prefix: str = "notifications",
        history_size: int = 1000,
        history_ttl: float | None = 24 * 3600,
        dead_letter_limit: int = 10000,
    ) -> None:
        self.client: redis.Redis[bytes] = (
            client
            if client is not None
            else redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        )
        self.key_prefix = key_prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.dead_letter_limit = dead_letter_limit

    @classmethod
    def from_config(cls, config: Mapping[str, Any], broker: Any = None) -> RedisPubSub:
        url = config.get("NOTIFICATIONS_REDIS_URL") or config.get("REDIS_URL")
        return cls(
            broker if isinstance(broker, redis.Redis) else None,
            url=url or "redis://localhost:6379/0",
            key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
            history_size=config["NOTIFICATIONS_HISTORY_SIZE"],
            history_ttl=config["NOTIFICATIONS_HISTORY_TTL"],
            dead_letter_limit=config["NOTIFICATIONS_DEAD_LETTER_LIMIT"],
        )

    def _key(self, channel: str) -> str:
        return f"{self.key_prefix}:hub:{channel}"

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis {what} failed: {exc}") from exc

    def _last_id(self, channel: str) -> str:
        entries = self._call("read", self.client.xrevrange, self._key(channel), count=1)
        return _text(entries[0][0]) if entries else "0-0"

    def publish(self, channel: str, data: str) -> Message:
        key = self._key(channel)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(key, {"d": data}, maxlen=self.history_size, approximate=True)
        if self.history_ttl is not None:
            cutoff_ms = int((time.time() - self.history_ttl) * 1000)
            pipe.xtrim(key, minid=f"{max(cutoff_ms, 0)}-0", approximate=True)
            pipe.expire(key, int(self.history_ttl) + 1)
        replies = self._call("publish", pipe.execute)
        return Message(channel, _text(replies[0]), data)

    def subscribe(self) -> Subscription:
        return _RedisSubscription(self)

    def history(self, channel: str, after_id: str | None) -> History:
        key = self._key(channel)
        start = "-" if after_id is None else f"({after_id}"
        entries = self._call("history", self.client.xrange, key, min=start)
        messages = [Message(channel, _text(eid), _field(fields)) for eid, fields in entries]
        if after_id is None:
            return History(messages)
        return History(messages, gap=self._trimmed_after(key, after_id))

    def _trimmed_after(self, key: str, after_id: str) -> bool:
        try:
            info = self.client.xinfo_stream(key)
        except redis.exceptions.ResponseError:
            # No such stream: whatever followed after_id is gone.
            return parse_id(after_id) > (0, 0)
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis history failed: {exc}") from exc
        after = parse_id(after_id)
        deleted = info.get("max-deleted-entry-id") or info.get(b"max-deleted-entry-id")
        if deleted is not None and parse_id(_text(deleted)) > after:
            return True
        # Trimming (MAXLEN, MINID) does not move max-deleted-entry-id, only
        # XDEL does: entries were trimmed after ``after_id`` when the oldest
        # kept entry is newer and the stream ever held more than it keeps.
        first = info.get("first-entry") or info.get(b"first-entry")
        added = info.get("entries-added", info.get(b"entries-added"))
        length = info.get("length", info.get(b"length"))
        trimmed = added is None or length is None or int(added) > int(length)
        return first is not None and trimmed and parse_id(_text(first[0])) > after

    def claim(self, key: str, timeout: float) -> Claim:
        full = f"{self.key_prefix}:claim:{key}"
        if self._call("claim", self.client.set, full, b"pending", nx=True, px=max(1, int(timeout * 1000))):
            return Claim.ACQUIRED
        state = self._call("claim", self.client.get, full)
        return Claim.DONE if state is not None and state in (_DONE, "done") else Claim.BUSY

    def complete(self, key: str, ttl: float) -> None:
        self._call("claim", self.client.set, f"{self.key_prefix}:claim:{key}", _DONE, ex=max(1, int(ttl)))

    def release(self, key: str) -> None:
        self._call("claim", self.client.delete, f"{self.key_prefix}:claim:{key}")

    @property
    def _dead_key(self) -> str:
        return f"{self.key_prefix}:dead-letters"

    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        letter_id = self._call(
            "dead letter",
            self.client.xadd,
            self._dead_key,
            {"r": json.dumps(dict(record))},
            maxlen=self.dead_letter_limit,
            approximate=True,
        )
        return _text(letter_id)

    def _letters(self, start: str, end: str) -> list[dict[str, Any]]:
        entries = self._call("dead letter", self.client.xrange, self._dead_key, min=start, max=end)
        return [{**json.loads(_field(fields, "r")), "id": _text(eid)} for eid, fields in entries]

    def dead_letters(self) -> list[dict[str, Any]]:
        return self._letters("-", "+")

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        try:
            parse_id(letter_id)
        except ValueError:
            return None
        found = self._letters(letter_id, letter_id)
        if not found or not self._call("dead letter", self.client.xdel, self._dead_key, letter_id):
            return None
        return found[0]

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.exceptions.RedisError:
            return False

    def close(self) -> None:
        self.client.close()
