"""Wrong PINs typed at the same time on two counters (two server threads, or two processes on one
database), or fifty at once, are each counted: the account locks at exactly MAX_FAILURES, never later, and
no more than MAX_FAILURES - 1 are answered "wrong" before the lock is recorded. Every refusal costs one
argon2 verification, so the time of the answer does not tell which accounts exist or are locked."""
import multiprocessing
import queue
import re
import statistics
import threading
import time

import pytest
from argon2 import PasswordHasher

from agent import staff
from kiosk.app import create_app
from kiosk.core.db import connect, migrate

from .conftest import csrf_token

ATTEMPTS = staff.MAX_FAILURES  # by each of the two: twice what locks the account


def cheap_hashing(monkeypatch) -> None:
    """Fifty argon2 verifications at the station's cost take seconds on two cores; the race is the same
    with a cheaper hash (forked processes inherit it)."""
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(staff, "_hasher", hasher)
    monkeypatch.setattr(staff, "_DUMMY_HASH", hasher.hash("not-a-real-pin"))


def wrong_pins(path, start, results, attempts=ATTEMPTS) -> None:
    """One counter: its own connection, ``attempts`` wrong PINs as fast as it can, what each got."""
    conn = connect(path)
    got = []
    try:
        start.wait(timeout=60)
        for _ in range(attempts):
            try:
                staff.login(conn, "an.nv", "135790")
            except staff.LoginRefused as refused:
                got.append(refused.reason)
    finally:
        conn.close()
    results.put(got)


@pytest.mark.parametrize("kind,counters,attempts", [
    ("threads", 2, ATTEMPTS), ("processes", 2, ATTEMPTS),  # two counters, twice what locks the account
    ("threads", 50, 1), ("processes", 10, 5),              # fifty wrong PINs at once
], ids=["2 threads", "2 processes", "50 threads", "10 processes x 5"])
def test_counters_typing_wrong_pins_at_once_lock_at_exactly_the_limit(tmp_path, monkeypatch, kind, counters,
                                                                     attempts):
    if counters * attempts > 2 * ATTEMPTS:
        cheap_hashing(monkeypatch)
    path = tmp_path / "station.db"
    migrate(path)
    conn = connect(path)
    staff.add(conn, "an.nv", "Cán bộ A", "agent", "246801")
    if kind == "threads":
        start, results = threading.Barrier(counters), queue.Queue()
        runners = [threading.Thread(target=wrong_pins, args=(path, start, results, attempts)) for _ in range(counters)]
    else:
        context = multiprocessing.get_context("fork")
        start, results = context.Barrier(counters), context.Queue()
        runners = [context.Process(target=wrong_pins, args=(path, start, results, attempts)) for _ in range(counters)]
    for runner in runners:
        runner.start()
    answers = [results.get(timeout=120) for _ in runners]
    for runner in runners:
        runner.join(timeout=30)
    reasons = [reason for answer in answers for reason in answer]

    # Every wrong PIN before the lock was counted, the one that reached the limit locked the account,
    # and every later one found it locked.
    assert len(reasons) == counters * attempts
    assert reasons.count("wrong") == staff.MAX_FAILURES - 1
    assert reasons.count("locked") == counters * attempts - (staff.MAX_FAILURES - 1)
    _assert_locked_once(conn)
    conn.close()


def _assert_locked_once(conn) -> None:
    """The audit says MAX_FAILURES - 1 wrong PINs, then the one that locked, and nothing counted after."""
    failed = [row[0] for row in conn.execute(
        "SELECT json_extract(detail, '$.locked') FROM audit_events WHERE action = 'staff.login_failed' ORDER BY seq")]
    assert failed == [0] * (staff.MAX_FAILURES - 1) + [1]
    row = conn.execute("SELECT failed_logins, locked_until FROM staff WHERE username = 'an.nv'").fetchone()
    assert row["failed_logins"] == 0 and row["locked_until"] is not None


def test_fifty_wrong_pins_at_once_through_one_app_get_one_answer_and_lock_once(tmp_path, monkeypatch):
    cheap_hashing(monkeypatch)
    app = create_app({"station": {"kind": "counter"}, "paths": {"data": str(tmp_path / "var")}})
    conn = connect(app.config["DATABASE"])
    staff.add(conn, "an.nv", "Cán bộ A", "agent", "246801")
    reasons, login = [], staff.login

    def counted_login(*args):  # what the app's threads were told inside, in the order it happened
        try:
            return login(*args)
        except staff.LoginRefused as refused:
            reasons.append(refused.reason)
            raise

    monkeypatch.setattr(staff, "login", counted_login)
    clients = [app.test_client() for _ in range(50)]
    tokens = [csrf_token(client.get("/agent/login").text) for client in clients]
    start, answers = threading.Barrier(len(clients)), queue.Queue()

    def counter(client, token):
        start.wait(timeout=60)
        answers.put(client.post("/agent/login", data={"csrf_token": token, "username": "an.nv", "secret": "135790"}))

    threads = [threading.Thread(target=counter, args=pair) for pair in zip(clients, tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    responses = [answers.get_nowait() for _ in threads]
    errors = {re.search(r'id="secret-error">(.*?)</p>', r.text, re.S).group(1) for r in responses}
    assert [r.status_code for r in responses] == [422] * 50
    assert len(errors) == 1 and "hoặc tài khoản đang tạm khoá" in errors.pop()  # one answer, locked or not
    assert reasons.count("wrong") == staff.MAX_FAILURES - 1 and reasons.count("locked") == 50 - (staff.MAX_FAILURES - 1)
    _assert_locked_once(conn)
    conn.close()


def test_every_refusal_costs_one_argon2_verification(tmp_path):
    """An unknown name, a locked account and a deactivated one cost what a wrong PIN costs: one
    verification with the same parameters (counted, and timed against a real one)."""
    path = tmp_path / "station.db"
    migrate(path)
    conn = connect(path)
    for name in ("an.nv", "binh.tt", "cuong.lv"):
        staff.add(conn, name, name, "agent", "246801")
    for _ in range(staff.MAX_FAILURES):
        with pytest.raises(staff.LoginRefused):
            staff.login(conn, "binh.tt", "000000")
    staff.set_state(conn, "cuong.lv", active=False)
    cases = {"wrong PIN": ("an.nv", "000000"), "unknown name": ("khong.co", "246801"),
             "locked, right PIN": ("binh.tt", "246801"), "locked, wrong PIN": ("binh.tt", "000000"),
             "deactivated, right PIN": ("cuong.lv", "246801")}

    verifications = []
    real_verify = staff._hasher.verify

    class Counting:
        def __getattr__(self, name):
            return getattr(real_verify.__self__, name)

        def verify(self, stored, secret):
            verifications.append(stored)
            return real_verify(stored, secret)

    counting = Counting()
    timings = {}
    original = staff._hasher
    staff._hasher = counting
    try:
        for case, (username, secret) in cases.items():
            timings[case] = []
            for _ in range(3):
                verifications.clear()
                began = time.perf_counter()
                with pytest.raises(staff.LoginRefused):
                    staff.login(conn, username, secret)
                timings[case].append(time.perf_counter() - began)
                assert len(verifications) == 1, case
    finally:
        staff._hasher = original
    stored = conn.execute("SELECT secret_hash FROM staff WHERE username = 'an.nv'").fetchone()[0]
    one = []
    for _ in range(3):
        began = time.perf_counter()
        staff._hasher.verify(stored, "246801")
        one.append(time.perf_counter() - began)
    for case, seconds in timings.items():
        assert min(seconds) >= 0.5 * min(one), (case, statistics.median(seconds), min(one))
    conn.close()
