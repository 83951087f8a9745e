"""After the station says "submitted", nothing may lose the dossier: here the server process is killed
with SIGKILL (no clean-up, as in a crash or power cut of the process) and the database is read after."""
import os
import random
import signal
import sqlite3
import threading

import pytest

from kiosk.core import audit
from tests.support.http_citizen import HttpCitizen

from .conftest import LiveStation

pytestmark = pytest.mark.slow


def _check_database(path):
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        dossiers = {row[0] for row in conn.execute("SELECT tracking_code FROM dossiers")}
        # Nothing half-written: every dossier has its outbox row and its audit event, and no more.
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == len(dossiers)
        assert conn.execute("SELECT COUNT(*) FROM audit_events WHERE action = 'dossier.submitted'"
                            ).fetchone()[0] == len(dossiers)
        assert conn.execute("SELECT COUNT(*) FROM dossiers d JOIN outbox o USING (submission_id)"
                            ).fetchone()[0] == len(dossiers)
        assert audit.verify(conn) == []
        return dossiers
    finally:
        conn.close()


def test_sigkill_right_after_submit_loses_nothing(tmp_path, catalog):
    station = LiveStation(tmp_path / "crash").start()
    proc = catalog["dang-ky-khai-tu"]
    citizen = HttpCitizen("127.0.0.1", station.port)
    try:
        first = citizen.apply(proc)
        citizen.submit(proc, citizen.fill(proc))
        os.kill(station.process.pid, signal.SIGKILL)   # the instant the citizen was told "submitted"
        station.process.wait(10)
    finally:
        citizen.close()
        station.stop()
    dossiers = _check_database(station.database)
    assert len(dossiers) == 2 and first in dossiers

    # The station starts again on the same database and goes on numbering after what was kept.
    station = LiveStation(tmp_path / "crash", port=station.port).start()
    citizen = HttpCitizen("127.0.0.1", station.port)
    try:
        third = citizen.apply(proc)
    finally:
        citizen.close()
        station.stop()
    assert third not in dossiers and len(_check_database(station.database)) == 3


def test_sigkill_during_concurrent_submits_keeps_every_acknowledged_dossier(tmp_path, catalog):
    station = LiveStation(tmp_path / "storm").start()
    procs = list(catalog.values())
    acknowledged, stop = [], threading.Event()
    lock = threading.Lock()

    def citizen_loop(seed):
        rng = random.Random(seed)
        citizen = HttpCitizen("127.0.0.1", station.port, timeout=5)
        try:
            while not stop.is_set():
                citizen.submit(proc := rng.choice(procs), citizen.fill(proc))
                code = citizen.finish()
                with lock:
                    acknowledged.append(code)
        except (OSError, RuntimeError, AttributeError, http_errors()):
            pass  # the server was killed under us
        finally:
            citizen.close()

    threads = [threading.Thread(target=citizen_loop, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    deadline = threading.Event()
    while len(acknowledged) < 12 and not deadline.wait(0.05):
        if not any(t.is_alive() for t in threads):
            break
    deadline.wait(random.uniform(0, 0.2))
    os.kill(station.process.pid, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(15)
    station.process.wait(10)
    station.stop()
    with lock:
        told = set(acknowledged)
    kept = _check_database(station.database)
    assert len(told) >= 12
    assert told <= kept, f"lost {len(told - kept)} acknowledged dossiers"
    # A dossier may be kept that the citizen never saw acknowledged (killed between commit and reply),
    # but at most one per citizen that was in flight.
    assert len(kept - told) <= len(threads)


def http_errors():
    import http.client
    return http.client.HTTPException
