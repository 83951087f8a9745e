"""Wrong PINs typed at the same time on two counters (two server threads, or two processes on one
database) are each counted: the account locks at exactly MAX_FAILURES, never later."""
import multiprocessing
import threading

import pytest

from agent import staff
from kiosk.core.db import connect, migrate

ATTEMPTS = staff.MAX_FAILURES  # by each of the two: twice what locks the account


def wrong_pins(path, start, results) -> None:
    """One counter: its own connection, MAX_FAILURES wrong PINs as fast as it can, what each got."""
    conn = connect(path)
    got = []
    try:
        start.wait(timeout=30)
        for _ in range(ATTEMPTS):
            try:
                staff.login(conn, "an.nv", "135790")
            except staff.LoginRefused as refused:
                got.append(refused.reason)
    finally:
        conn.close()
    results.put(got)


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_two_counters_typing_wrong_pins_lock_at_exactly_the_limit(tmp_path, kind):
    path = tmp_path / "station.db"
    migrate(path)
    conn = connect(path)
    staff.add(conn, "an.nv", "Cán bộ A", "agent", "246801")
    if kind == "threads":
        import queue

        start, results = threading.Barrier(2), queue.Queue()
        runners = [threading.Thread(target=wrong_pins, args=(path, start, results)) for _ in range(2)]
    else:
        context = multiprocessing.get_context("fork")
        start, results = context.Barrier(2), context.Queue()
        runners = [context.Process(target=wrong_pins, args=(path, start, results)) for _ in range(2)]
    for runner in runners:
        runner.start()
    answers = [results.get(timeout=120) for _ in runners]
    for runner in runners:
        runner.join(timeout=30)
    reasons = answers[0] + answers[1]

    # Every wrong PIN before the lock was counted, the one that reached the limit locked the account,
    # and every later one found it locked.
    assert len(reasons) == 2 * ATTEMPTS
    assert reasons.count("wrong") == staff.MAX_FAILURES - 1
    assert reasons.count("locked") == 2 * ATTEMPTS - (staff.MAX_FAILURES - 1)
    failed = [row[0] for row in conn.execute(
        "SELECT json_extract(detail, '$.locked') FROM audit_events WHERE action = 'staff.login_failed' ORDER BY seq")]
    assert failed == [0] * (staff.MAX_FAILURES - 1) + [1]
    row = conn.execute("SELECT failed_logins, locked_until FROM staff WHERE username = 'an.nv'").fetchone()
    assert row["failed_logins"] == 0 and row["locked_until"] is not None
    conn.close()
