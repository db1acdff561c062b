"""The page's login rules on their own, with an explicit clock: sessions, lockout, origin, passwords."""

from __future__ import annotations

import pytest

from edge.web.auth import (
    ADDRESS_LOCKOUT_AFTER,
    DUMMY_HASH,
    MAX_TRACKED,
    NAME_SPREAD,
    Lockout,
    SessionStore,
    same_origin,
    same_token,
    verify_password,
)
from tests.edge.web_fakes import fast_hash

MIN = 60.0


def test_a_session_ends_after_its_idle_time_and_each_use_starts_that_time_again() -> None:
    sessions = SessionStore(idle_s=30 * MIN, max_s=12 * 3600)
    s = sessions.create("li.wei", "cloud", "h", now=0)
    assert sessions.get(s.token, 29 * MIN) is s
    assert sessions.get(s.token, 58 * MIN) is s  # 29 min after the last use
    assert sessions.get(s.token, 88 * MIN) is None  # 30 min idle
    assert sessions.get(s.token, 89 * MIN) is None  # and it stays gone
    assert len(sessions) == 0


def test_a_session_ends_after_its_absolute_age_however_busy() -> None:
    sessions = SessionStore(idle_s=30 * MIN, max_s=2 * 3600)
    s = sessions.create("li.wei", "cloud", "h", now=0)
    t = 0.0
    while t < 2 * 3600 - 10 * MIN:
        t += 10 * MIN
        assert sessions.get(s.token, t) is s
    assert sessions.expired(s, 2 * 3600) == "max_age"
    assert sessions.get(s.token, 2 * 3600) is None


def test_peeking_at_a_session_does_not_keep_it_alive() -> None:
    sessions = SessionStore(idle_s=30 * MIN, max_s=12 * 3600)
    s = sessions.create("li.wei", "cloud", "h", now=0)
    assert sessions.peek(s.token, 20 * MIN) is s
    assert sessions.peek(s.token, 30 * MIN) is None
    assert sessions.get(s.token, 30 * MIN) is None


def test_sessions_have_distinct_random_tokens_and_csrf_tokens_and_unknown_tokens_find_nothing() -> None:
    sessions = SessionStore(idle_s=30 * MIN, max_s=12 * 3600)
    a = sessions.create("li.wei", "cloud", "h", now=0)
    b = sessions.create("li.wei", "cloud", "h", now=0)
    assert len({a.token, b.token, a.csrf, b.csrf}) == 4
    assert len(a.token) >= 43  # 32 random bytes, base64url
    assert sessions.get("forged", 1) is None
    assert sessions.get(None, 1) is None
    assert sessions.drop(a.token) is a
    assert sessions.get(a.token, 1) is None
    assert sessions.get(b.token, 1) is b


def test_the_least_recently_used_session_goes_when_the_store_is_full() -> None:
    sessions = SessionStore(idle_s=30 * MIN, max_s=12 * 3600, max_sessions=2)
    a = sessions.create("a.a", "cloud", "h", now=0)
    b = sessions.create("b.b", "cloud", "h", now=1)
    assert sessions.get(a.token, 2) is a  # a used after b
    c = sessions.create("c.c", "cloud", "h", now=3)
    assert sessions.get(b.token, 4) is None
    assert sessions.get(a.token, 4) is a
    assert sessions.get(c.token, 4) is c


def test_new_limits_apply_to_live_sessions() -> None:
    sessions = SessionStore(idle_s=30 * MIN, max_s=12 * 3600)
    s = sessions.create("li.wei", "cloud", "h", now=0)
    sessions.configure(idle_s=5 * MIN, max_s=12 * 3600)
    assert sessions.get(s.token, 6 * MIN) is None


def test_a_name_is_locked_at_an_address_after_its_failures_there_and_unlocks_after_the_window() -> None:
    lock = Lockout(after=3, window_s=15 * MIN)
    assert lock.failed("li.wei", "10.0.0.5", 0) == []
    assert lock.failed("li.wei", "10.0.0.5", 60) == []
    assert lock.check("li.wei", "10.0.0.5", 61) is None
    assert lock.failed("li.wei", "10.0.0.5", 120) == ["name"]
    refusal = lock.check("li.wei", "10.0.0.5", 121)
    assert refusal is not None and refusal.scope == "name" and refusal.retry_after_s == 15 * 60 - 1
    assert lock.check("li.wei", "10.0.0.8", 121) is None  # the technician's own laptop still logs in
    assert lock.check("zhang.san", "10.0.0.5", 121) is None  # other names are not locked
    assert lock.check("li.wei", "10.0.0.5", 120 + 15 * MIN - 1) is not None
    assert lock.check("li.wei", "10.0.0.5", 120 + 15 * MIN) is None


def test_a_name_failing_from_many_addresses_is_locked_everywhere() -> None:
    lock = Lockout(after=3, window_s=15 * MIN)
    started: list[str] = []
    for i in range(3 * NAME_SPREAD):
        started += lock.failed("li.wei", f"10.0.1.{i}", float(i))
    assert started == ["name"]
    refusal = lock.check("li.wei", "10.0.0.99", 60)
    assert refusal is not None and refusal.scope == "name"


def test_one_login_of_a_name_and_one_from_an_address_is_checked_at_a_time() -> None:
    lock = Lockout(after=3, window_s=15 * MIN)
    assert lock.begin("li.wei", "10.0.0.5")
    assert not lock.begin("li.wei", "10.0.0.6")  # the same name from elsewhere waits
    assert not lock.begin("zhang.san", "10.0.0.5")  # another name from the same address waits
    assert lock.begin("zhang.san", "10.0.0.6")
    lock.end("li.wei", "10.0.0.5")
    assert lock.begin("li.wei", "10.0.0.7")


def test_a_flood_of_new_names_does_not_unlock_a_locked_one() -> None:
    lock = Lockout(after=2, window_s=15 * MIN, address_after=10**9)
    lock.failed("li.wei", "10.0.0.5", 0)
    assert lock.failed("li.wei", "10.0.0.5", 0) == ["name"]
    for i in range(MAX_TRACKED + 10):
        lock.failed(f"guess{i}", "10.0.0.66", 1)
    assert lock.check("li.wei", "10.0.0.5", 2) is not None


def test_failures_spread_wider_than_the_window_do_not_lock() -> None:
    lock = Lockout(after=3, window_s=15 * MIN)
    for i in range(10):
        assert lock.failed("li.wei", "10.0.0.5", i * 8 * MIN) == []
    assert lock.check("li.wei", "10.0.0.5", 80 * MIN) is None


def test_a_success_before_the_lockout_clears_the_names_failures() -> None:
    lock = Lockout(after=3, window_s=15 * MIN)
    lock.failed("li.wei", "10.0.0.5", 0)
    lock.failed("li.wei", "10.0.0.5", 1)
    lock.succeeded("li.wei", "10.0.0.5")
    assert lock.failed("li.wei", "10.0.0.5", 2) == []
    assert lock.failed("li.wei", "10.0.0.5", 3) == []
    assert lock.failed("li.wei", "10.0.0.5", 4) == ["name"]


def test_an_address_trying_many_names_is_locked_for_every_name() -> None:
    lock = Lockout(after=5, window_s=15 * MIN)
    started: list[str] = []
    for i in range(ADDRESS_LOCKOUT_AFTER):
        started += lock.failed(f"guess{i}", "10.0.0.66", float(i))
    assert started == ["address"]
    refusal = lock.check("li.wei", "10.0.0.66", 60)
    assert refusal is not None and refusal.scope == "address"
    assert lock.check("li.wei", "10.0.0.5", 60) is None  # the technician's own laptop still logs in


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        pytest.param(None, True, id="no-origin-header"),
        pytest.param("http://10.0.0.20:8080", True, id="same"),
        pytest.param("http://10.0.0.20:8080/", True, id="trailing-slash"),
        pytest.param("https://10.0.0.20:8080", False, id="other-scheme"),
        pytest.param("http://10.0.0.20:8081", False, id="other-port"),
        pytest.param("http://evil.example", False, id="other-host"),
        pytest.param("null", False, id="null"),
    ],
)
def test_only_the_pages_own_origin_passes(origin: str | None, ok: bool) -> None:
    assert same_origin(origin, "http", "10.0.0.20:8080") is ok


def test_tokens_compare_whole() -> None:
    assert same_token("abc", "abc")
    assert not same_token("ab", "abc")
    assert not same_token("", "abc")
    assert not same_token(None, "abc")


def test_passwords_verify_against_their_argon2_hash_and_a_missing_account_never_verifies() -> None:
    h = fast_hash("correct horse")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "correct hors")
    assert not verify_password("not-a-hash", "correct horse")
    assert not verify_password(None, "correct horse")


def test_an_unknown_name_costs_a_verify_with_the_default_parameters_of_real_hashes() -> None:
    from argon2 import PasswordHasher
    from argon2.exceptions import VerifyMismatchError

    assert not PasswordHasher().check_needs_rehash(DUMMY_HASH)  # same parameters as a real account's hash
    with pytest.raises(VerifyMismatchError):  # a well-formed hash: the full verify runs, then mismatches
        PasswordHasher().verify(DUMMY_HASH, "dummy password for timing")
