"""The contract every ledger honours, run against real servers.

One module, parametrised over ``memory``, ``redis`` (the real Redis),
``sql-sqlite`` (a SQLite file) and ``sql-postgresql`` (the real PostgreSQL
at ``POSTGRES_URL``; those cases skip, saying why, only when none answers).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.backends.base import Backend, MessageIds, parse_id
from flask_notifications.backends.memory import MemoryPubSub
from flask_notifications.errors import ConfigurationError
from flask_notifications.ledger.base import Claim, Ledger, build_ledger, resolve_ledger
from flask_notifications.ledger.memory import MemoryLedger
from flask_notifications.ledger.redis import RedisLedger
from flask_notifications.ledger.sql import SqlLedger
from tests.helpers import wait_for
from tests.ledger.conftest import drop_sql, postgres_engine

# -- claims ---------------------------------------------------------------------------


def test_claim_complete_release(ledger: Ledger, unique: str) -> None:
    key = f"{unique}-work"
    assert ledger.claim(key, "t1", 30) is Claim.ACQUIRED
    assert ledger.claim(key, "t2", 30) is Claim.BUSY
    assert ledger.claim(key, "t1", 30) is Claim.BUSY  # a claim is not taken twice, even by its owner
    assert ledger.extend(key, "t1", 30) is True
    assert ledger.extend(key, "t2", 30) is False
    assert ledger.complete(key, "t2", 30) is False
    assert ledger.complete(key, "t1", 30) is True
    assert ledger.claim(key, "t3", 30) is Claim.DONE
    assert ledger.complete(key, "t3", 30) is True  # recorded again: it stays done
    other = f"{unique}-other"
    assert ledger.claim(other, "t1", 30) is Claim.ACQUIRED
    assert ledger.release(other, "t2") is False
    assert ledger.release(other, "t1") is True
    assert ledger.claim(other, "t2", 30) is Claim.ACQUIRED
    assert ledger.release(f"{unique}-never-claimed", "t1") is False


def test_claims_expire(ledger: Ledger, unique: str) -> None:
    pending, done = f"{unique}-pending", f"{unique}-done"
    assert ledger.claim(pending, "t1", 0.2) is Claim.ACQUIRED
    assert ledger.claim(done, "t1", 30) is Claim.ACQUIRED
    ledger.complete(done, "t1", 1)
    assert ledger.claim(done, "t2", 30) is Claim.DONE
    wait_for(lambda: ledger.claim(pending, "t2", 30) is Claim.ACQUIRED)
    wait_for(lambda: ledger.claim(done, "t2", 30) is Claim.ACQUIRED)


def test_an_expired_owner_cannot_touch_the_next_owners_claim(ledger: Ledger, unique: str) -> None:
    """An owner whose claim expired (a consumer slower than the claim
    timeout) neither releases, extends nor completes the claim another run
    took since."""
    key = f"{unique}-slow"
    assert ledger.claim(key, "slow", 0.2) is Claim.ACQUIRED
    wait_for(lambda: ledger.claim(key, "next", 30) is Claim.ACQUIRED)
    assert ledger.release(key, "slow") is False
    assert ledger.extend(key, "slow", 30) is False
    assert ledger.complete(key, "slow", 30) is False
    assert ledger.claim(key, "third", 30) is Claim.BUSY  # still the next owner's
    assert ledger.complete(key, "next", 30) is True
    assert ledger.claim(key, "third", 30) is Claim.DONE


def test_a_claim_extended_by_its_owner_does_not_expire(ledger: Ledger, unique: str) -> None:
    key = f"{unique}-extended"
    # The lease is long next to a call (a loaded machine stalled SQLite for
    # over 1.5 s between two of them), and the loop runs past it.
    lease = 3.0
    assert ledger.claim(key, "owner", lease) is Claim.ACQUIRED
    started = time.monotonic()
    while time.monotonic() - started < lease + 1:  # renewed every 0.2 s
        assert ledger.extend(key, "owner", lease) is True
        assert ledger.claim(key, "other", 30) is Claim.BUSY
        time.sleep(0.2)
    # A completion whose claim expired, with nobody holding it since, is recorded.
    gone = f"{unique}-gone"
    assert ledger.claim(gone, "owner", 0.1) is Claim.ACQUIRED
    time.sleep(0.5)  # let it expire (any call on it would renew or take it)
    assert ledger.complete(gone, "owner", 30) is True
    assert ledger.claim(gone, "other", 30) is Claim.DONE


def test_one_of_many_concurrent_claims_wins(ledger: Ledger, unique: str) -> None:
    key = f"{unique}-race"
    start = threading.Barrier(8)
    results: list[Claim] = []

    def take(token: str) -> None:
        start.wait()
        results.append(ledger.claim(key, token, 30))

    threads = [threading.Thread(target=take, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result.value for result in results) == ["acquired"] + ["busy"] * 7


# -- dead letters -----------------------------------------------------------------------


def test_dead_letters(ledger: Ledger) -> None:
    assert ledger.dead_letters() == [] and ledger.dead_letter_count() == 0
    first = ledger.add_dead_letter({"event": {"x": "é\n"}, "error": "boom", "attempts": 3})
    second = ledger.add_dead_letter({"event": {"x": 2}, "error": "bang"})
    letters = ledger.dead_letters()
    assert [letter["id"] for letter in letters] == [first, second]
    assert letters[0] == {"event": {"x": "é\n"}, "error": "boom", "attempts": 3, "id": first}
    assert ledger.dead_letter_count() == 2
    assert ledger.get_dead_letter(second) == {"event": {"x": 2}, "error": "bang", "id": second}
    removed = ledger.remove_dead_letter(first)
    assert removed is not None and removed["error"] == "boom"
    assert ledger.remove_dead_letter(first) is None
    assert ledger.remove_dead_letter("not-an-id") is None
    assert ledger.get_dead_letter("not-an-id") is None
    assert [letter["id"] for letter in ledger.dead_letters()] == [second]


def test_a_dead_letter_mark_is_set_atomically_once(ledger: Ledger) -> None:
    letter = ledger.add_dead_letter({"event": "e"})
    assert ledger.mark_dead_letter(letter, "", "retrying:t1") == "retrying:t1"
    # A second retry finds the first one's mark, and does not replace it.
    assert ledger.mark_dead_letter(letter, "", "retrying:t2") == "retrying:t1"
    assert ledger.get_dead_letter(letter) == {"event": "e", "id": letter, "retry": "retrying:t1"}
    assert ledger.mark_dead_letter(letter, "retrying:t1", "") == ""  # taken back
    assert ledger.get_dead_letter(letter) == {"event": "e", "id": letter}
    assert ledger.mark_dead_letter(letter, "", "retrying:t1") == "retrying:t1"
    assert ledger.mark_dead_letter(letter, "retrying:t1", "done:t1") == "done:t1"
    assert [found.get("retry") for found in ledger.dead_letters()] == ["done:t1"]
    assert ledger.remove_dead_letter(letter) is not None
    assert ledger.mark_dead_letter(letter, "", "retrying:t3") is None
    assert ledger.mark_dead_letter("not-an-id", "", "retrying:t3") is None


# -- the outbox ------------------------------------------------------------------------


def test_outbox_entries_are_taken_when_due_and_once(ledger: Ledger, unique: str) -> None:
    ledger.outbox_add({f"{unique}-a": '{"n": 1}', f"{unique}-b": '{"n": 2}'}, 1_000)
    ledger.outbox_add({f"{unique}-c": '{"n": 3}'}, 5_000)
    assert ledger.outbox_size() == 3
    assert ledger.outbox_take(999, 10_000) == []
    taken = ledger.outbox_take(1_000, 10_000)
    assert sorted(taken) == [(f"{unique}-a", '{"n": 1}'), (f"{unique}-b", '{"n": 2}')]
    # Taken entries are due again only at the time they were given.
    assert ledger.outbox_take(6_000, 10_000) == [(f"{unique}-c", '{"n": 3}')]
    assert ledger.outbox_take(9_999, 20_000) == []
    assert len(ledger.outbox_take(10_000, 20_000, limit=2)) == 2
    assert len(ledger.outbox_take(10_000, 20_000, limit=2)) == 1
    assert ledger.outbox_size() == 3


def test_outbox_add_replaces_an_entry_atomically(ledger: Ledger, unique: str) -> None:
    dispatch = f"{unique}-dispatch"
    ledger.outbox_add({dispatch: "d"}, 1_000)
    ledger.outbox_add({f"{unique}-c1": "c1", f"{unique}-c2": "c2"}, 2_000, remove=dispatch)
    assert ledger.outbox_size() == 2
    assert sorted(ledger.outbox_take(3_000, 9_000)) == [(f"{unique}-c1", "c1"), (f"{unique}-c2", "c2")]
    ledger.outbox_add({f"{unique}-c1": "again"}, 100)  # an id written again is replaced
    assert ledger.outbox_take(100, 9_000) == [(f"{unique}-c1", "again")]
    ledger.outbox_add({}, 0, remove=f"{unique}-c2")
    assert ledger.outbox_size() == 1


def test_outbox_postpone_and_remove(ledger: Ledger, unique: str) -> None:
    entry = f"{unique}-e"
    assert ledger.outbox_postpone(entry, 5) is False
    assert ledger.outbox_remove(entry) is False
    ledger.outbox_add({entry: "r"}, 1_000)
    assert ledger.outbox_postpone(entry, 50_000) is True
    assert ledger.outbox_take(49_999, 60_000) == []
    assert ledger.outbox_take(50_000, 60_000) == [(entry, "r")]
    assert ledger.outbox_remove(entry) is True
    assert ledger.outbox_remove(entry) is False
    assert ledger.outbox_size() == 0
    assert ledger.outbox_take(10**12, 10**12 + 1) == []


def test_outbox_remove_many_removes_a_batch_at_once(ledger: Ledger, unique: str) -> None:
    # 1,200 ids: more than one SQL statement's worth (500), in one step.
    entries = {f"{unique}-{n}": str(n) for n in range(1_200)}
    ledger.outbox_add(entries, 1_000)
    ledger.outbox_add({f"{unique}-kept": "k"}, 1_000)
    assert ledger.outbox_remove_many([*entries, f"{unique}-absent"]) == 1_200
    assert ledger.outbox_remove_many([]) == 0
    assert ledger.outbox_take(10**12, 10**12 + 1) == [(f"{unique}-kept", "k")]


def test_one_of_many_concurrent_sweepers_takes_each_entry(ledger: Ledger, unique: str) -> None:
    entries = {f"{unique}-{n}": str(n) for n in range(40)}
    ledger.outbox_add(entries, 1_000)
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def sweep() -> None:
        start.wait()
        for _ in range(5):
            found = ledger.outbox_take(2_000, 99_000, limit=10)
            with lock:
                taken.extend(found)

    threads = [threading.Thread(target=sweep) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(entries.items())


def test_sql_dead_letters_are_bounded(tmp_path: Path) -> None:
    ledger = SqlLedger(sa.create_engine(f"sqlite:///{tmp_path / 'l.sqlite3'}"), dead_letter_limit=3, owns_engine=True)
    ids = [ledger.add_dead_letter({"n": n}) for n in range(5)]
    assert [letter["n"] for letter in ledger.dead_letters()] == [2, 3, 4]
    assert [letter["id"] for letter in ledger.dead_letters()] == ids[2:]
    ledger.close()


def test_sql_tables_are_created_once_by_processes_starting_together(unique: str) -> None:
    """Ledgers of several processes that start at once all create the
    tables (or find them), as gunicorn workers booting together do."""
    engine = postgres_engine()
    ledgers = [SqlLedger(engine, key_prefix=unique) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(ledgers))

    def boot(ledger: SqlLedger) -> None:
        start.wait()
        try:
            ledger.claim("k", "t", 30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert sa.inspect(engine).has_table(f"{unique.replace('-', '_')}_claims")
    finally:
        drop_sql(ledgers[0])
        engine.dispose()


def test_memory_ledger_purges_expired_claims() -> None:
    ledger = MemoryLedger(ledger_size=100_000)
    for i in range(20000):
        assert ledger.claim(f"k{i}", "t", 0) is Claim.ACQUIRED
    assert ledger.ledger_stats()["entries"] <= 2048
    for i in range(3000):
        ledger.claim(f"live{i}", "t", 300)
    assert ledger.ledger_stats()["entries"] <= 2 * 3000 + 1
    assert ledger.claim("live0", "u", 300) is Claim.BUSY


@pytest.mark.redis
def test_redis_ledger_keeps_the_keys_the_redis_backend_wrote(
    redis_url: str, unique: str, redis_client: redis.Redis[bytes]
) -> None:
    """Data written before the split (claims and dead letters under the
    Redis backend's keys) stays valid."""
    redis_client.set(f"{unique}:claim:old", "done", px=60_000)
    redis_client.xadd(f"{unique}:{{dead-letters}}", {"r": '{"error": "old"}'})
    ledger = RedisLedger(url=redis_url, key_prefix=unique)
    try:
        assert ledger.claim("old", "t", 30) is Claim.DONE
        (letter,) = ledger.dead_letters()
        assert letter["error"] == "old"
        parse_id(letter["id"])
    finally:
        ledger.close()
        redis_client.delete(*redis_client.scan_iter(f"{unique}*"))


# -- choosing a ledger --------------------------------------------------------------------


def test_aliases_resolve() -> None:
    assert resolve_ledger("redis") is RedisLedger
    assert resolve_ledger("SQL") is SqlLedger
    assert resolve_ledger("memory") is MemoryLedger
    assert resolve_ledger("flask_notifications.ledger.sql:SqlLedger") is SqlLedger
    mine = MemoryLedger()
    assert resolve_ledger(mine) is mine


@pytest.mark.parametrize("spec", ["mongo", "flask_notifications.ledger.sql.Nothing", "flask_notifications.event.Event"])
def test_an_unknown_ledger_lists_the_choices(spec: str) -> None:
    with pytest.raises(ConfigurationError, match=r"use memory, redis, sql, or a dotted path to a Ledger subclass"):
        resolve_ledger(spec)


def _app(tmp_path: Path, **config: object) -> Flask:
    app = Flask("ledger_choice", instance_path=str(tmp_path / "instance"))
    app.config.update({"TESTING": True, "CELERY_TASK_ALWAYS_EAGER": True, **config})
    return app


@pytest.mark.redis
@pytest.mark.postgres
def test_the_default_ledger_of_each_backend(
    tmp_path: Path, redis_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    redis_app = _app(tmp_path, NOTIFICATIONS_BACKEND="redis", NOTIFICATIONS_REDIS_URL=redis_url)
    ext = Notifications(redis_app)
    ledger = ext.get_ledger(redis_app)
    assert isinstance(ledger, RedisLedger) and ledger.client is ext.get_backend(redis_app).client  # type: ignore[attr-defined]
    memory_app = _app(tmp_path, NOTIFICATIONS_BACKEND="memory")
    assert isinstance(Notifications(memory_app).get_ledger(memory_app), MemoryLedger)
    assert "in-process" not in caplog.text
    ext.get_backend(redis_app).close()


def test_the_amqp_backend_takes_the_database_then_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    inbox_url = f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    with_db = _app(tmp_path, NOTIFICATIONS_BACKEND="amqp", NOTIFICATIONS_INBOX_URL=inbox_url)
    ledger = Notifications(with_db).get_ledger(with_db)
    assert isinstance(ledger, SqlLedger) and str(ledger.engine.url) == inbox_url
    by_url = _app(tmp_path, NOTIFICATIONS_BACKEND="amqp", NOTIFICATIONS_LEDGER_URL="sqlite://")
    assert isinstance(Notifications(by_url).get_ledger(by_url), SqlLedger)
    assert "in-process" not in caplog.text
    bare = _app(tmp_path, NOTIFICATIONS_BACKEND="amqp")
    assert isinstance(Notifications(bare).get_ledger(bare), MemoryLedger)
    assert "in-process memory ledger" in caplog.text


def test_an_explicit_sql_ledger_defaults_to_sqlite_in_the_instance_folder(tmp_path: Path) -> None:
    app = _app(tmp_path, NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_LEDGER="sql")
    ledger = Notifications(app).get_ledger(app)
    assert isinstance(ledger, SqlLedger)
    assert ledger.claim("k", "t", 30) is Claim.ACQUIRED
    assert (tmp_path / "instance" / "notifications_ledger.sqlite3").exists()
    ledger.close()


def test_an_unknown_ledger_fails_init_app(tmp_path: Path) -> None:
    app = _app(tmp_path, NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_LEDGER="zookeeper")
    with pytest.raises(ConfigurationError, match="Unknown notifications ledger 'zookeeper'.*memory, redis, sql"):
        Notifications(app)


class _OldStyleBackend(MemoryPubSub):
    """A third-party backend written against 0.2, which kept claims itself."""

    def __init__(self) -> None:
        super().__init__()
        self.kept = MemoryLedger()
        self.ids = MessageIds()

    def claim(self, key: str, token: str, timeout: float) -> Claim:
        return self.kept.claim(key, token, timeout)

    def extend(self, key: str, token: str, timeout: float) -> bool:
        return self.kept.extend(key, token, timeout)

    def complete(self, key: str, token: str, ttl: float) -> bool:
        return self.kept.complete(key, token, ttl)

    def release(self, key: str, token: str) -> bool:
        return self.kept.release(key, token)

    def add_dead_letter(self, record: dict[str, object]) -> str:
        return self.kept.add_dead_letter(record)

    def dead_letters(self) -> list[dict[str, object]]:
        return self.kept.dead_letters()

    def remove_dead_letter(self, letter_id: str) -> dict[str, object] | None:
        return self.kept.remove_dead_letter(letter_id)


def test_a_backend_that_still_keeps_claims_is_its_own_ledger(tmp_path: Path) -> None:
    backend = _OldStyleBackend()
    app = _app(tmp_path, NOTIFICATIONS_BACKEND=backend)
    ext = Notifications(app)
    assert ext.get_backend(app) is backend
    ledger = ext.get_ledger(app)
    assert ledger.claim("k", "t", 30) is Claim.ACQUIRED
    assert backend.kept.claim("k", "u", 30) is Claim.BUSY  # the backend's own
    letter = ledger.add_dead_letter({"e": 1})
    assert [found["id"] for found in backend.kept.dead_letters()] == [letter]
    with pytest.raises(NotImplementedError, match="BackendLedger does not implement mark_dead_letter"):
        ledger.mark_dead_letter(letter, "", "x")  # as 0.2's Backend did: a retry then goes without a mark
    with pytest.raises(NotImplementedError, match="_OldStyleBackend keeps no outbox"):
        ledger.outbox_add({"d:1": "{}"}, 0)  # send() then goes on without it, with one warning


def test_build_ledger_with_an_instance(tmp_path: Path) -> None:
    mine = MemoryLedger()
    app = _app(tmp_path, NOTIFICATIONS_LEDGER=mine)
    backend: Backend = MemoryPubSub()
    assert build_ledger(app, backend) is mine


def test_the_amqp_backend_takes_the_flask_sqlalchemy_engine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from flask_sqlalchemy import SQLAlchemy

    caplog.set_level(logging.WARNING)
    app = _app(tmp_path, NOTIFICATIONS_BACKEND="amqp", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}")
    db = SQLAlchemy(app)
    ledger = Notifications(app).get_ledger(app)
    with app.app_context():
        assert isinstance(ledger, SqlLedger) and ledger.engine is db.engine
    assert ledger.claim("k", "t", 30) is Claim.ACQUIRED
    ledger.close()  # the engine is Flask-SQLAlchemy's: still usable
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT holder FROM notifications_claims")).scalar() == "t"
    assert "in-process" not in caplog.text
