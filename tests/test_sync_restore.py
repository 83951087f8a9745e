"""Backups restored and clocks moved, through real processes: the central runs as its own process behind
a proxy on 127.0.0.1 and is killed, restored from real backup files (SQLite's online backup, or a copy of
its whole data folder) and started again; the sync worker runs as its own process, once under libfaketime
with its clock days off. Nothing the station holds may be lost or doubled, no official code issued twice,
no tracking code used for two dossiers."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kiosk.core import audit
from kiosk.app import create_app
from kiosk.core.db import connect
from sync.central import open_central
from tests.support.faulty_proxy import FaultyProxy
from tests.support.harness import CentralProcess, enrol, make_station, submit_many, worker_command
from sync.notices import notices
from sync.worker import station_paths, worker_from_config

from .conftest import csrf_token

FAST = {"base_delay": 0.05, "max_delay": 0.4, "idle_interval": 0.05, "timeout": 10}
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


# -- the operator's tools, done the way an operator does them -----------------------------------------------

def sqlite_backup(database: Path, dest: Path) -> Path:
    """SQLite's online backup API: a consistent copy while the database is in use."""
    src, dst = sqlite3.connect(database), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return dest


def put_back(database: Path, backup: Path) -> None:
    """Restore a database file by hand: the old one and its WAL gone, the backup in its place."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, database)


def sync(config, *args, env=None) -> dict:
    """Run the sync worker process until nothing waits; its summary."""
    done = subprocess.run(worker_command(config, "--until-empty", "--max-seconds", "60", *args),
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def station_db(config):
    return connect(station_paths(config)["database"])


def codes(config) -> dict:
    conn = station_db(config)
    try:
        return dict(conn.execute("SELECT submission_id, central_code FROM dossiers").fetchall())
    finally:
        conn.close()


class Central:
    """The central as a killable process behind a proxy, so the station's URL survives restarts."""

    def __init__(self, folder: Path, *options: str):
        self.folder = folder
        self.process = CentralProcess(folder, *options).start()
        self.proxy = FaultyProxy(self.process.port).start()
        self.url = self.proxy.url

    def stop(self):
        self.process.kill()

    def start(self):
        self.process.start()
        self.proxy.set_upstream(self.process.port)

    def close(self):
        self.process.kill()
        self.proxy.stop()

    def copy_folder(self, dest: Path) -> Path:
        """A snapshot of the whole data folder (as a VM snapshot would take it), the process stopped."""
        self.stop()
        shutil.copytree(self.folder, dest)
        self.start()
        return dest

    def put_folder_back(self, snapshot: Path) -> None:
        self.stop()
        shutil.rmtree(self.folder)
        shutil.copytree(snapshot, self.folder)
        self.start()

    def opened(self):
        """The central's store, opened here while its process is stopped."""
        return open_central(self.folder).store


@pytest.fixture
def make_central(tmp_path):
    """Start the central with more `kiosk central serve` options; stopped at the end of the test."""
    made = []

    def make(*options):
        made.append(Central(tmp_path / "central", *options))
        return made[-1]

    yield make
    for central in made:
        central.close()


@pytest.fixture
def central(make_central):
    return make_central()


def station(tmp_path, central, name="station", **sync_settings):
    config = make_station(tmp_path / name, central.url, sync={**FAST, **sync_settings})
    opened = open_central(central.folder)
    enrol(opened, config)
    opened.store.close()  # this process keeps nothing open: `kiosk central restore` checks that
    return config


# -- a central restored from a backup ----------------------------------------------------------------------

def test_a_central_restored_from_a_backup_gets_back_every_dossier_with_its_code(tmp_path, central):
    config = station(tmp_path, central)
    first = submit_many(config, 10, seed=1)
    sync(config)
    central.stop()
    central.opened().set_status(first[0], "processing", "staff")
    backup = sqlite_backup(central.folder / "central.sqlite3", tmp_path / "central-backup.sqlite3")
    central.start()

    later = submit_many(config, 60, seed=2)
    sync(config)
    before = codes(config)
    assert all(before[sid] for sid in first + later)

    central.stop()
    put_back(central.folder / "central.sqlite3", backup)  # by hand: the watermark file finds it out
    central.start()
    newest = submit_many(config, 1, seed=3)  # arrives before the station resends anything
    summary = sync(config)
    central.stop()

    store = central.opened()
    assert store.identity()["generation"] == 2
    held = {row["submission_id"]: row for row in store.submissions(limit=1000)}
    after = codes(config)
    assert set(held) == set(first + later + newest)
    assert all(held[sid]["central_code"] == before[sid] == after[sid] for sid in first + later)
    assert after[newest[0]] not in before.values()
    assert len({row["central_code"] for row in held.values()}) == 71
    assert summary["pending"] == 0 and summary["acked"] >= 61

    conn = station_db(config)
    try:
        told = notices(conn)
        states = dict(conn.execute("SELECT name, value FROM sync_state").fetchall())
        status = dict(conn.execute("SELECT submission_id, status FROM dossiers").fetchall())
        changed = conn.execute("SELECT COUNT(*) FROM audit_events WHERE action = 'dossier.code_changed'").fetchone()
        assert audit.verify(conn) == []
    finally:
        conn.close()
    assert told["rewound"]["reason"] == "restored" and told["rewound"]["resent"] == 70
    assert told["resending"] == 0 and not told["code_changed"] and changed[0] == 0
    assert status[first[0]] == "processing"  # the feed was read again from where the central now is
    assert int(states["changes_cursor"]) == store.head("K01")


def test_a_whole_central_folder_put_back_is_found_behind_and_resent(tmp_path, central):
    """A snapshot of the whole data folder (the watermark file too): the station sees the central's
    change numbers behind its own cursor."""
    config = station(tmp_path, central)
    first = submit_many(config, 10, seed=1)
    sync(config)
    snapshot = central.copy_folder(tmp_path / "snapshot")
    later = submit_many(config, 30, seed=2)
    sync(config)
    before = codes(config)

    central.put_folder_back(snapshot)
    sync(config)  # finds the central behind, resends the 40 with their acknowledgements
    newest = submit_many(config, 1, seed=3)
    sync(config)
    central.stop()

    store = central.opened()
    held = {row["submission_id"]: row["central_code"] for row in store.submissions(limit=1000)}
    after = codes(config)
    assert set(held) == set(first + later + newest)
    assert all(held[sid] == before[sid] == after[sid] for sid in first + later)
    assert after[newest[0]] not in before.values() and len(set(held.values())) == 41
    conn = station_db(config)
    try:
        assert notices(conn)["rewound"]["reason"] == "behind"
    finally:
        conn.close()


def test_a_payload_stays_until_the_central_confirms_it_and_one_it_lacks_is_sent_again(tmp_path, make_central):
    central = make_central("--restore-window-days", "1")
    config = station(tmp_path, central, retention_days=0.5)
    snapshot = central.copy_folder(tmp_path / "snapshot")  # enrolled, nothing received
    ids = submit_many(config, 5)
    worker = worker_from_config(config)
    assert worker.push()["acked"] == 5  # acknowledged; the feed not read yet
    central.put_folder_back(snapshot)
    worker.client.close()  # the kept-alive connection went with the old process (the proxy says 502)

    later = datetime.now(timezone.utc) + timedelta(days=1, minutes=1)
    assert worker.purge(now=later, central_now=later) == 0  # the central does not hold them
    assert worker.pending() == 5
    assert worker.push()["acked"] == 5
    held = worker.client.holds(ids)["held"]
    assert set(held) == set(ids)
    assert worker.purge(now=later, central_now=later) == 5
    assert worker._state("restore_window_s") == str(86400.0)
    worker.close()


def test_dossiers_the_central_lost_after_their_purge_here_are_listed_for_staff(tmp_path, make_central):
    central = make_central("--restore-window-days", "0")
    config = station(tmp_path, central, retention_days=0.5)
    central.stop()
    empty = sqlite_backup(central.folder / "central.sqlite3", tmp_path / "empty.sqlite3")
    central.start()
    submit_many(config, 3, seed=1)
    worker = worker_from_config(config)
    worker.run(until_empty=True, max_seconds=20)
    later = datetime.now(timezone.utc) + timedelta(days=1)
    assert worker.purge(now=later, central_now=later) == 3
    kept = submit_many(config, 2, seed=2)
    worker.run(until_empty=True, max_seconds=20)

    central.stop()
    put_back(central.folder / "central.sqlite3", empty)
    central.opened().mark_restored()  # the documented restore (kiosk central restore does this)
    central.start()
    worker.client.close()
    report = worker.cycle()
    assert report["lost"] == 3
    worker.run(until_empty=True, max_seconds=20)
    assert set(worker.client.holds(kept)["held"]) == set(kept)  # what it still had, it got again
    worker.close()

    conn = station_db(config)
    try:
        told = notices(conn)
    finally:
        conn.close()
    assert len(told["lost"]) == 3 and told["rewound"]["reason"] == "restored"
    home = staff_page(tmp_path, "/agent/")
    assert 'data-notice="tell-applicants"' in home and "3 hồ sơ cần báo lại cho người nộp" in home
    assert 'data-notice="central-restored"' in home
    listed = staff_page(tmp_path, "/agent/rejected")
    assert listed.count('data-tell="lost"') == 3
    assert all(row["tracking_code"] in listed for row in told["lost"])


def staff_page(tmp_path, path: str) -> str:
    """A page of the station's staff screens (the station's own data folder), as a logged-in agent."""
    from agent import staff

    app = create_app({"station": {"kind": "counter", "id": "K01"}, "paths": {"data": str(tmp_path / "station/var")}})
    conn = connect(app.config["DATABASE"])
    try:
        if not conn.execute("SELECT 1 FROM staff WHERE username = 'lan'").fetchone():
            staff.add(conn, "lan", "Lan", "agent", "246810")
    finally:
        conn.close()
    client = app.test_client()
    page = client.get("/agent/login")
    client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": "lan", "secret": "246810"})
    return client.get(path).text


# -- a station restored from a backup, or reinstalled -----------------------------------------------------

def test_tracking_codes_a_station_issues_again_after_a_restore_by_hand_are_reissued(tmp_path, central):
    config = station(tmp_path, central)
    submit_many(config, 1, seed=1)
    database = station_paths(config)["database"]
    backup = sqlite_backup(database, tmp_path / "station-backup.sqlite3")
    submit_many(config, 2, seed=2)
    sync(config)
    sent_before = codes(config)
    put_back(database, backup)  # without `kiosk restore`: no new incarnation, the day's sequence goes back
    again = submit_many(config, 2, seed=3)
    summary = sync(config)
    central.stop()

    store = central.opened()
    held = store.submissions(limit=100)
    assert len(held) == 5 and len({row["tracking_code"] for row in held}) == 5
    assert summary["recoded"] == 2
    conn = station_db(config)
    try:
        refused = conn.execute("SELECT d.submission_id, d.tracking_code, o.last_error FROM dossiers d "
                               "JOIN outbox o USING (submission_id) WHERE o.state = 'rejected'").fetchall()
        reissued = conn.execute("SELECT tracking_code, supersedes, central_code FROM dossiers "
                                "WHERE supersedes IS NOT NULL").fetchall()
        told = notices(conn)
    finally:
        conn.close()
    assert {row["submission_id"] for row in refused} == set(again)
    assert all(row["tracking_code"].split("-")[2].startswith("A") for row in reissued)
    assert {row["supersedes"] for row in reissued} == set(again)
    assert all(new["tracking_code"] in old["last_error"] for old, new in
               zip(sorted(refused, key=lambda r: r["submission_id"]), sorted(reissued, key=lambda r: r["supersedes"])))
    assert {row["central_code"] for row in reissued}.isdisjoint(sent_before.values())
    assert len(told["reissued"]) == 2
    # The new incarnation is noted outside the database too: a restore of an older backup starts past it.
    assert (station_paths(config)["database"].parent / "incarnation").read_text().strip() == "1"
    # The citizen's receipt has the old code: the tracking page sends them on to the new one.
    app = create_app({"station": {"kind": "kiosk", "id": "K01"}, "paths": {"data": str(tmp_path / "station/var")}})
    old_code = refused[0]["tracking_code"]
    new_code = next(r["tracking_code"] for r in reissued if r["supersedes"] == refused[0]["submission_id"])
    page = app.test_client().get(f"/track/{old_code}").text
    assert f'data-replaced-by="{new_code}"' in page and "thay bằng hồ sơ có mã tra cứu mới" in page


def test_a_reinstalled_station_with_the_same_id_never_reuses_a_tracking_code(tmp_path, central):
    first = station(tmp_path, central, "station")
    submit_many(first, 3, seed=1)
    sync(first)
    again = station(tmp_path, central, "reinstalled")  # a new disk, a new key, the same station id
    submit_many(again, 3, seed=2)
    summary = sync(again)
    central.stop()
    held = central.opened().submissions(limit=100)
    assert len(held) == 6 and len({row["tracking_code"] for row in held}) == 6
    assert summary["recoded"] == 3


# -- clocks moved ------------------------------------------------------------------------------------------

def faketime(offset: str) -> dict:
    if not FAKETIME.exists():
        pytest.skip("libfaketime is not installed (make test installs it)")
    return {**os.environ, "LD_PRELOAD": str(FAKETIME), "FAKETIME": offset, "DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_NO_CACHE": "1"}


def worker_while_link_down(config, offset: str) -> None:
    """A worker with its clock ``offset`` off, for 3 seconds, with no central to answer: it defers."""
    done = subprocess.run(worker_command(config, "--max-seconds", "3"), capture_output=True, text=True,
                          timeout=60, env=faketime(offset))
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_worker_days_ahead_sends_purges_nothing_and_its_waits_end_once_corrected(tmp_path, make_central):
    central = make_central("--restore-window-days", "0")
    config = station(tmp_path, central, retention_days=1.0, base_delay=600, max_delay=3600)
    ids = submit_many(config, 4)
    ahead = sync(config, env=faketime("+3d"))  # its requests are stamped 3 days ahead: it learns the offset
    assert ahead["acked"] == 4 and ahead["purged"] == 0
    conn = station_db(config)
    try:
        payloads = conn.execute("SELECT COUNT(*) FROM dossiers WHERE payload_sealed IS NOT NULL").fetchone()[0]
        skew = int(conn.execute("SELECT value FROM sync_state WHERE name = 'clock_skew_seconds'").fetchone()[0])
    finally:
        conn.close()
    assert payloads == 4  # acknowledged "3 days ago" by its own clock, just now by the central's
    assert 3 * 86400 - 120 < skew < 3 * 86400 + 120
    home = staff_page(tmp_path, "/agent/")
    assert 'data-notice="clock"' in home and "Đồng hồ của trạm nhanh 4320 phút" in home

    # Now the link is down while the clock is still ahead: retry times are set 3 days ahead.
    central.stop()
    more = submit_many(config, 3, seed=5)
    worker_while_link_down(config, "+3d")
    central.start()
    fixed = sync(config)  # NTP corrected the clock: they are due now, not in three days
    assert fixed["acked"] == 3 and fixed["pending"] == 0

    # A small jump too (20 minutes, well within the longest backoff): due at once, not 20 minutes on.
    central.stop()
    last = submit_many(config, 2, seed=6)
    worker_while_link_down(config, "+20m")
    central.start()
    started = time.monotonic()
    fixed = sync(config)
    assert fixed["acked"] == 2 and fixed["pending"] == 0 and time.monotonic() - started < 30
    central.stop()
    assert set(central.opened().holds("K01", ids + more + last)) == set(ids + more + last)


# -- the operator's commands, end to end -------------------------------------------------------------------

def kiosk(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "kiosk", *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_kiosk_backup_and_restore_then_sync_for_a_station_and_for_the_central(tmp_path, central):
    config = station(tmp_path, central)
    first = submit_many(config, 5, seed=1)
    sync(config)
    (tmp_path / "station-backups").mkdir()
    kiosk("backup", "--station", config["source"], tmp_path / "station-backups")
    (station_archive,) = (tmp_path / "station-backups").iterdir()
    lost_here = submit_many(config, 5, seed=2)  # sent, then lost with the station's disk
    sync(config)

    out = kiosk("restore", "--station", config["source"], "--yes", station_archive)
    assert "Đã khôi phục" in out
    after_restore = submit_many(config, 3, seed=3)
    sync(config)

    (tmp_path / "central-backups").mkdir()
    kiosk("central", "backup", "--data", central.folder, tmp_path / "central-backups")
    (central_archive,) = (tmp_path / "central-backups").iterdir()
    last = submit_many(config, 4, seed=4)
    sync(config)
    before = codes(config)
    central.stop()
    kiosk("central", "restore", "--data", central.folder, central_archive)
    central.start()
    sync(config)
    central.stop()

    store = central.opened()
    held = {row["submission_id"]: row for row in store.submissions(limit=100)}
    assert set(held) == set(first + lost_here + after_restore + last)
    assert len({row["tracking_code"] for row in held.values()}) == 17
    assert len({row["central_code"] for row in held.values()}) == 17
    after = codes(config)
    assert all(held[sid]["central_code"] == before[sid] == after[sid] for sid in first + after_restore + last)
    assert all(held[sid]["tracking_code"].split("-")[2].startswith("A") for sid in after_restore + last)
    assert store.identity()["generation"] == 2
