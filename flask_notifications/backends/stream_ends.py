"""Where streams end, found for many callers at once.

A subscription's ``add`` needs the end of the channel's stream (its
``last-generated-id`` and ``entries-added``, from ``XINFO STREAM``) before
it returns, and each stream's request adds its channel from its own
greenlet or thread. Asked one by one, ten thousand hubs opening together
would cost ten thousand sequential round trips. :class:`StreamEnds` makes
concurrent callers share them, as a group commit does: each caller queues
its key; the first that finds no lookup in flight becomes the *leader*,
takes up to :data:`CHUNK` queued keys and asks for all their ends in one
non-transactional pipeline (one round trip), hands each caller its own
answer, then hands the lead to the first caller still queued. So a caller
waits for at most the lookup in flight plus its own, and a burst of ``n``
adds costs about ``n / CHUNK`` round trips.

A failure reaches every caller of the failed pipeline as a
:class:`~flask_notifications.errors.BackendError`. A leader interrupted
before it answers (a ``gevent.Timeout``, a killed greenlet) puts the keys
it took back in the queue and passes the lead on, so nobody waits forever.

On a Redis Cluster the pipeline is redis-py's cluster pipeline, which sends
each node its keys' commands and reads the replies: one round trip per
node holding a key of the chunk, not one per key.

The locks and events are the ``threading`` ones, which gevent's
monkey-patching makes cooperative, and a leader yields once (``sleep(0)``)
before it takes its keys, so that the greenlets ready to run queue theirs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from ..errors import BackendError
from .redis_client import decode
from .redis_lineage import info_field

#: The most keys one pipeline asks for.
CHUNK = 1000

#: A stream's end: its last generated id and entries-added counter (``None``
#: before Redis 7); ``("0-0", 0)`` for a stream that does not exist.
End = tuple[str, int | None]


def end_of(info: Any) -> End:
    """The end of a stream from its ``XINFO STREAM`` reply."""
    added = info_field(info, "entries-added")
    return decode(info_field(info, "last-generated-id")), None if added is None else int(added)


class _Lookup:
    """One caller's key, and its answer once the lookup is done."""

    __slots__ = ("key", "woken", "lead", "end", "error")

    def __init__(self, key: str) -> None:
        self.key = key
        # Set when the answer is in, or when the lead is handed over.
        self.woken = threading.Event()
        self.lead = False
        self.end: End | None = None
        self.error: Exception | None = None


class StreamEnds:
    """The ends of streams on the server of ``client``, found in shared
    pipelines (see the module's description).

    :param client: a ``redis.Redis`` or ``redis.cluster.RedisCluster``.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._queued: list[_Lookup] = []
        # Whether a caller leads (or has been handed the lead).
        self._busy = False

    @property
    def queued(self) -> int:
        """How many callers wait for a lookup not sent yet."""
        return len(self._queued)

    def find(self, key: str) -> End:
        """The end of the stream at ``key``, read after this call began.

        :raises BackendError: the server cannot be reached, or refused the
            command with another error than "no such key".
        """
        lookup = _Lookup(key)
        with self._lock:
            self._queued.append(lookup)
            if not self._busy:
                self._busy = lookup.lead = True
        try:
            if not lookup.lead:
                lookup.woken.wait()
            if lookup.lead:
                self._lead(lookup)
        except BaseException:
            self._abandon(lookup)
            raise
        if lookup.error is not None:
            # Each caller gets its own error, chained to the pipeline's.
            raise BackendError(str(lookup.error)) from lookup.error
        assert lookup.end is not None
        return lookup.end

    def _lead(self, own: _Lookup) -> None:
        """Look up the first :data:`CHUNK` queued keys (``own``'s among
        them), answer their callers, and hand the lead on."""
        # Let the callers ready to run queue first: a greenlet whose round
        # trip completes without blocking (a fast server) never yields, and
        # the greenlets it woke would then lead one lookup each in turn.
        time.sleep(0)
        with self._lock:
            own.lead = False
            batch, self._queued = self._queued[:CHUNK], self._queued[CHUNK:]
        try:
            self._look_up(batch)
        finally:
            answered = [lookup for lookup in batch if lookup.end is not None or lookup.error is not None]
            with self._lock:
                if len(answered) < len(batch):
                    # Interrupted before answering: the others go back in front.
                    unanswered = [lookup for lookup in batch if lookup.end is None and lookup.error is None]
                    self._queued[:0] = [lookup for lookup in unanswered if lookup is not own]
                successor = self._hand_on()
            for lookup in answered:
                lookup.woken.set()
            if successor is not None:
                successor.woken.set()

    def _hand_on(self) -> _Lookup | None:
        """The caller that leads next (flagged), or ``None`` (no longer
        busy); called with the lock held."""
        if not self._queued:
            self._busy = False
            return None
        successor = self._queued[0]
        successor.lead = True
        return successor

    def _abandon(self, lookup: _Lookup) -> None:
        """Forget the caller of ``lookup``, interrupted while it waited
        (passing on the lead if it had been handed it)."""
        with self._lock:
            if lookup in self._queued:
                self._queued.remove(lookup)
            successor = None
            if lookup.lead:
                lookup.lead = False
                successor = self._hand_on()
        if successor is not None:
            successor.woken.set()

    def _look_up(self, batch: list[_Lookup]) -> None:
        """Ask for the end of every key of ``batch`` in one pipeline (each
        distinct key once) and record each lookup's answer."""
        keys = list(dict.fromkeys(lookup.key for lookup in batch))
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.xinfo_stream(key)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as exc:
            error = BackendError(f"Redis read failed: {exc}")
            for lookup in batch:
                lookup.error = error
            return
        found: dict[str, End | Exception] = {}
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, redis.exceptions.ResponseError):
                found[key] = ("0-0", 0)  # no such stream
            elif isinstance(reply, Exception):
                found[key] = BackendError(f"Redis read failed: {reply}")
            else:
                found[key] = end_of(reply)
        for lookup in batch:
            answer = found[lookup.key]
            if isinstance(answer, Exception):
                lookup.error = answer
            else:
                lookup.end = answer
