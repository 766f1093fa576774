"""The per-process copy of the preferences: bounded in age and in users."""

from __future__ import annotations

from flask_notifications.preferences import PreferenceCache


def test_entries_expire_after_max_age_and_the_least_recently_used_go_first() -> None:
    cache = PreferenceCache(max_users=2)
    cache.put(100.0, {"alice": {("news", "email"): False}, "bob": {}})
    found, missing = cache.get(["alice", "bob", "carol"], 104.9, 5.0)
    assert found == {"alice": {("news", "email"): False}, "bob": {}} and missing == ["carol"]
    # Read at 100 with a max age of 5: from 105 on, read again.
    assert cache.get(["alice"], 105.0, 5.0) == ({}, ["alice"])
    # bob was used after alice: carol pushes alice out.
    cache.get(["bob"], 101.0, 5.0)
    cache.put(101.0, {"carol": {}})
    assert len(cache) == 2 and cache.get(["alice", "bob", "carol"], 102.0, 5.0)[1] == ["alice"]


def test_a_change_here_drops_the_copies_of_that_user_and_of_the_table() -> None:
    cache = PreferenceCache()
    cache.put(100.0, {"alice": {}})
    cache.whole = (100.0, {"alice": {}})
    assert cache.fresh_whole(101.0, 5.0) == {"alice": {}} and cache.fresh_whole(105.0, 5.0) is None
    cache.forget("alice")
    assert cache.whole is None and cache.get(["alice"], 101.0, 5.0) == ({}, ["alice"])
