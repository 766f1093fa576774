"""The due-table contract (timers and digest windows), run against every
ledger: memory, the real Redis, SQLite and the real PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from flask_notifications.ledger.base import DigestAdd, DueTimer, Ledger
from flask_notifications.ledger.memory import MemoryLedger


def test_a_timer_is_claimed_when_due_and_once_per_lease(ledger: Ledger, unique: str) -> None:
    timer_id = f"{unique}-t"
    assert ledger.timer_set(timer_id, '{"a": 1}', 1000, "v1") is True
    assert ledger.timer_set(timer_id, '{"a": 2}', 1000, "v2", replace=False) is False
    assert ledger.timer_count() == 1
    assert ledger.timer_claim(999, 5000) == []
    (claimed,) = ledger.timer_claim(1000, 5000)
    assert claimed == DueTimer(timer_id, '{"a": 1}', "v1", 1000, 1)
    assert ledger.timer_claim(4999, 9000) == []  # leased until 5000
    (again,) = ledger.timer_claim(5000, 9000)  # the lease lapsed: claimed again
    assert (again.version, again.attempts, again.due_ms) == ("v1", 2, 5000)
    found = ledger.timer_get(timer_id)
    assert found is not None and found.due_ms == 9000


def test_finish_and_retry_need_the_version(ledger: Ledger, unique: str) -> None:
    timer_id = f"{unique}-t"
    ledger.timer_set(timer_id, "{}", 1000, "v1")
    assert ledger.timer_retry(timer_id, "v0", 3000) is False
    assert ledger.timer_retry(timer_id, "v1", 3000) is True
    assert ledger.timer_claim(2999, 9000) == []
    ledger.timer_set(timer_id, "{}", 1000, "v2")  # set again meanwhile
    assert ledger.timer_finish(timer_id, "v1") is False
    assert ledger.timer_get(timer_id) is not None
    assert ledger.timer_finish(timer_id, "v2") is True
    assert ledger.timer_get(timer_id) is None
    assert ledger.timer_count() == 0
    ledger.timer_set(timer_id, "{}", 1000, "v3")
    assert ledger.timer_cancel(timer_id) is True
    assert ledger.timer_cancel(timer_id) is False
    assert ledger.timer_claim(10**12, 10**12 + 1) == []


def test_claims_come_earliest_first_and_up_to_the_limit(ledger: Ledger, unique: str) -> None:
    for due in (3000, 1000, 2000):
        ledger.timer_set(f"{unique}-{due}", "{}", due, "v")
    claimed = ledger.timer_claim(5000, 9000, limit=2)
    assert [timer.id for timer in claimed] == [f"{unique}-1000", f"{unique}-2000"]
    assert [timer.id for timer in ledger.timer_claim(5000, 9000)] == [f"{unique}-3000"]


def test_one_of_many_concurrent_tickers_claims_each_timer(ledger: Ledger, unique: str) -> None:
    for number in range(60):
        ledger.timer_set(f"{unique}-{number}", "{}", 1000 + number, "v")
    taken: list[str] = []
    lock = threading.Lock()

    def tick() -> None:
        while True:
            claimed = ledger.timer_claim(2000, 10**12, limit=7)
            if not claimed:
                return
            with lock:
                taken.extend(timer.id for timer in claimed)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(f"{unique}-{number}" for number in range(60))


def _timer(group: str, version: str = "v1", due_ms: int = 5000) -> DueTimer:
    return DueTimer(group, '{"kind": "digest"}', version, due_ms)


def test_a_digest_window_opens_collects_seals_and_finishes(ledger: Ledger, unique: str) -> None:
    group = f"{unique}-g"
    assert ledger.digest_add(_timer(group), "d1", "one") is DigestAdd.OPENED
    assert ledger.digest_add(_timer(group, "other", 99), "d2", "two") is DigestAdd.ADDED
    assert ledger.digest_add(_timer(group), "d1", "one again") is DigestAdd.DUPLICATE
    timer = ledger.timer_get(group)
    assert timer is not None and (timer.version, timer.due_ms) == ("v1", 5000)  # the first window's timer
    assert ledger.digest_size(group) == 2
    assert ledger.digest_seal(group, "v0") is None
    assert ledger.digest_seal(group, "v1") == [("d1", "one"), ("d2", "two")]
    ledger.digest_add(_timer(group), "d3", "three")  # after the seal: the next window
    assert ledger.digest_seal(group, "v1") == [("d1", "one"), ("d2", "two")]  # sealed once
    assert ledger.digest_finish(group, "v0", 9000, "v2", keep_open=False) is False
    assert ledger.digest_finish(group, "v1", 9000, "v2", keep_open=False) is True
    timer = ledger.timer_get(group)
    assert timer is not None and (timer.version, timer.due_ms) == ("v2", 9000)  # d3 waits
    assert ledger.digest_size(group) == 1
    assert ledger.digest_seal(group, "v2") == [("d3", "three")]
    assert ledger.digest_finish(group, "v2", 13000, "v3", keep_open=False) is True
    assert ledger.timer_get(group) is None  # nothing waits: the window closed
    assert ledger.digest_size(group) == 0


def test_first_at_once_opens_the_window_without_the_item(ledger: Ledger, unique: str) -> None:
    group = f"{unique}-g"
    assert ledger.digest_add(_timer(group), "d1", "one", first_at_once=True) is DigestAdd.FIRST
    assert ledger.digest_add(_timer(group), "d2", "two", first_at_once=True) is DigestAdd.ADDED
    assert ledger.digest_seal(group, "v1") == [("d2", "two")]
    assert ledger.digest_finish(group, "v1", 9000, "v2", keep_open=True) is True
    timer = ledger.timer_get(group)
    assert timer is not None and timer.version == "v2"  # kept open although empty
    assert ledger.digest_seal(group, "v2") == []
    assert ledger.digest_finish(group, "v2", 13000, "v3", keep_open=False) is True
    assert ledger.timer_get(group) is None
    assert ledger.digest_add(_timer(group), "d3", "three", first_at_once=True) is DigestAdd.FIRST


def test_cancelling_a_digest_drops_its_items(ledger: Ledger, unique: str) -> None:
    group = f"{unique}-g"
    ledger.digest_add(_timer(group), "d1", "one")
    ledger.digest_seal(group, "v1")
    ledger.digest_add(_timer(group), "d2", "two")
    assert ledger.timer_cancel(group) is True
    assert ledger.digest_size(group) == 0
    assert ledger.digest_add(_timer(group, "v9"), "d1", "one") is DigestAdd.OPENED


def test_items_added_concurrently_with_fires_are_each_flushed_once(ledger: Ledger, unique: str) -> None:
    """Writers add while a ticker seals and finishes windows: every item is
    sealed in exactly one window, and none is left without a timer."""
    group = f"{unique}-g"
    flushed: list[str] = []
    done = threading.Event()

    def write(writer: int) -> None:
        for number in range(40):
            ledger.digest_add(_timer(group, "v0", 0), f"{writer}-{number}", "x")

    def fire() -> None:
        windows = 0
        while True:
            finished_writing = done.is_set()
            for timer in ledger.timer_claim(10**12, 10**12):
                items = ledger.digest_seal(group, timer.version)
                assert items is not None
                flushed.extend(item_id for item_id, _ in items)
                windows += 1
                ledger.digest_finish(group, timer.version, 0, f"v{windows}", keep_open=False)
            if finished_writing and ledger.timer_get(group) is None:
                return

    writers = [threading.Thread(target=write, args=(number,)) for number in range(3)]
    ticker = threading.Thread(target=fire)
    ticker.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    ticker.join(timeout=60)
    assert not ticker.is_alive()
    assert sorted(flushed) == sorted(f"{w}-{n}" for w in range(3) for n in range(40))
    assert ledger.digest_size(group) == 0


def test_a_ledger_without_a_due_table_says_so() -> None:
    class Bare(MemoryLedger):
        timer_set = Ledger.timer_set

    with pytest.raises(NotImplementedError, match="Bare keeps no timers"):
        Bare().timer_set("t", "{}", 0, "v")
