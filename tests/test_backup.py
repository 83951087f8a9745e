"""`kiosk backup` and `kiosk restore` through the real command, on a real station data folder: a backup
taken while citizens submit is consistent, a restore brings back exactly the backup and starts a new
incarnation (so no tracking code is issued twice, even one issued after the backup and lost), and a
restore that cannot be done safely changes nothing."""
import hashlib
import io
import json
import random
import socket
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.fake_printer import unused_port
from kiosk.core import tracking_code
from kiosk.cli import main
from kiosk.core.config import load_station
from kiosk.core.db import connect
from sync.central import open_central
from tests.support.harness import PROCEDURE, enrol, make_station, sample_answers, submit_many
from sync.worker import hold_worker_lock, station_paths


@pytest.fixture
def station(tmp_path):
    """An enrolled station with its own free web port (restore refuses while the station's port answers)."""
    config = make_station(tmp_path / "station", "http://127.0.0.1:9")
    with open(config["source"], "a") as f:
        f.write(f"[server]\nport = {unused_port()}\n")
    config = load_station(config["source"])
    enrol(open_central(tmp_path / "central"), config)
    return config


def kiosk(config, *args, ok=True):
    result = CliRunner().invoke(main, [args[0], "--station", config["source"], *map(str, args[1:])])
    assert (result.exit_code == 0) == ok, result.output
    return result


def rows(config, sql):
    conn = connect(station_paths(config)["database"])
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def codes(config):
    return {code for (code,) in rows(config, "SELECT tracking_code FROM dossiers")}


def folder_state(config):
    """Every file of the data folder and its sha256, but the worker's lock file (restore takes the lock)."""
    folder = station_paths(config)["database"].parent
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.is_file() and p.name != "sync-worker.lock"}


def submit_one(config):
    (sid,) = submit_many(config, 1, seed=len(codes(config)) + 1000)
    return rows(config, f"SELECT tracking_code FROM dossiers WHERE submission_id = '{sid}'")[0][0]


def test_backup_taken_while_dossiers_are_submitted_is_consistent(tmp_path, station):
    from kiosk.core.dossiers import submit
    from kiosk.core.sealing import load_or_create_key

    submit_many(station, 20)
    stop, submitted = threading.Event(), []

    def keep_submitting():
        conn, rng = connect(station_paths(station)["database"]), random.Random(7)
        key = load_or_create_key(station_paths(station)["payload_key"])
        while not stop.is_set():
            submitted.append(submit(conn, key=key, station=station["station"], channel="kiosk",
                                    procedure=PROCEDURE, answers=sample_answers(rng)).submission_id)
        conn.close()

    writer = threading.Thread(target=keep_submitting)
    writer.start()
    try:
        while len(submitted) < 20:
            time.sleep(0.01)
        out = kiosk(station, "backup", tmp_path).output
        after = len(submitted)
        while len(submitted) < after + 5:  # the writer went on: the backup did not stop it
            time.sleep(0.01)
    finally:
        stop.set()
        writer.join()
    (archive,) = tmp_path.glob("kiosk-K01-*.tar.gz")
    assert archive.stat().st_mode & 0o777 == 0o600
    assert "Đã sao lưu" in out and "Backed up" in out and "0600" in out and "Nguy" not in out
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "manifest.json"
        manifest = json.loads(tar.extractfile("manifest.json").read())
        tar.extractall(tmp_path / "unpacked", filter="data")
    copy = tmp_path / "unpacked" / "station.db"
    assert set(manifest["files"]) == {"station.db", "payload.key", "station.ed25519", "central-keys.json"}
    assert all(hashlib.sha256((tmp_path / "unpacked" / n).read_bytes()).hexdigest() == h
               for n, h in manifest["files"].items())
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    in_backup = conn.execute("SELECT COUNT(*) FROM dossiers").fetchone()[0]
    assert 40 <= in_backup < 20 + len(submitted)
    assert (manifest["station_id"], manifest["dossiers"], manifest["pending"], manifest["incarnation"]) == (
        "K01", in_backup, in_backup, 0)
    # One consistent moment: every dossier with its outbox row and its audit event, and nothing else.
    assert conn.execute("SELECT COUNT(*) FROM dossiers d JOIN outbox o USING (submission_id)").fetchone()[0] == in_backup
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == in_backup
    assert conn.execute("SELECT COUNT(*) FROM audit_events WHERE action = 'dossier.submitted'").fetchone()[0] == in_backup
    conn.close()


def test_restore_brings_back_the_backup_and_never_reissues_a_tracking_code(tmp_path, station):
    submit_many(station, 5)
    backed_up = codes(station)
    kiosk(station, "backup", tmp_path / "b.tar.gz")
    submit_many(station, 3, seed=1)  # after the backup: lost by the restore, but their codes were given out
    issued = codes(station)
    assert len(issued) == 8

    out = kiosk(station, "restore", tmp_path / "b.tar.gz", "--yes").output
    assert "Đã khôi phục" in out and "Restored" in out and "new incarnation 1" in out
    assert "5 dossiers waiting to be sent" in out and "reconcile with the central" in out
    assert codes(station) == backed_up
    first = submit_one(station)
    assert tracking_code.is_valid(first) and first.split("-")[2].startswith("A") and first not in issued
    assert (tmp_path / "station" / "var" / "incarnation").read_text().strip() == "1"
    (kept,) = (tmp_path / "station" / "var").glob("station.db.before-restore-*[0-9]Z")
    assert sqlite3.connect(kept).execute("SELECT COUNT(*) FROM dossiers").fetchone()[0] == 8

    # The disk fails: the database is lost, not the marker beside it. The same backup again: incarnation 2.
    issued |= {first}
    database = station_paths(station)["database"]
    database.write_bytes(b"not a database any more")
    out = kiosk(station, "restore", tmp_path / "b.tar.gz", "--yes").output
    assert "new incarnation 2" in out
    second = submit_one(station)
    assert second.split("-")[2].startswith("B") and second not in issued
    assert rows(station, "SELECT n, reason FROM incarnations") == [(2, "restore")]
    assert rows(station, "SELECT COUNT(*) FROM audit_events WHERE action = 'station.restored'") == [(1,)]
    verified = CliRunner().invoke(main, ["audit", "verify", "--station", station["source"]])
    assert verified.exit_code == 0 and "chain intact" in verified.output
    assert len(list(database.parent.glob("station.db.before-restore-*"))) >= 2  # nothing deleted


def test_restore_refuses_while_the_worker_or_the_web_app_runs(tmp_path, station):
    submit_many(station, 2)
    kiosk(station, "backup", tmp_path / "b.tar.gz")
    database = station_paths(station)["database"]
    # Another process with the database open (a web app that served a page, a sqlite3 shell).
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); "
                               "c.execute('SELECT 1 FROM dossiers'); print(1, flush=True); time.sleep(60)",
                               str(database)], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        out = kiosk(station, "restore", tmp_path / "b.tar.gz", "--yes", ok=False).output
    finally:
        holder.kill()
        holder.wait()
    assert f"process {holder.pid} has" in out
    before = folder_state(station)
    lock = hold_worker_lock(database.parent)
    try:
        out = kiosk(station, "restore", tmp_path / "b.tar.gz", "--yes", ok=False).output
    finally:
        lock.close()
    assert "đồng bộ đang chạy" in out and "sync worker runs" in out
    with socket.socket() as web:  # the station's web address answers
        web.bind(("127.0.0.1", station["server"]["port"]))
        web.listen(1)
        out = kiosk(station, "restore", tmp_path / "b.tar.gz", "--yes", ok=False).output
    assert "systemctl stop kiosk" in out
    assert folder_state(station) == before
    kiosk(station, "restore", tmp_path / "b.tar.gz", "--yes")
    hold_worker_lock(database.parent).close()  # the restore let go of the worker's lock


def _repack(archive: Path, out: Path, change=lambda name, data: data, **manifest_changes):
    """The same backup with its files changed by ``change(name, data)`` and the manifest made to match."""
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    manifest = {**json.loads(files.pop("manifest.json")), **manifest_changes}
    files = {name: change(name, data) for name, data in files.items()}
    manifest["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    with tarfile.open(out, "w:gz") as tar:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_damaged_or_foreign_backups_are_refused_and_nothing_changes(tmp_path, station):
    submit_many(station, 30)
    archive = tmp_path / "b.tar.gz"
    kiosk(station, "backup", archive)
    submit_many(station, 2, seed=5)
    before = folder_state(station)

    flipped = bytearray(archive.read_bytes())
    for i in range(len(flipped) // 2, len(flipped) // 2 + 8):
        flipped[i] ^= 0xFF
    (tmp_path / "flipped.tar.gz").write_bytes(bytes(flipped))
    out = kiosk(station, "restore", tmp_path / "flipped.tar.gz", "--yes", ok=False).output
    assert "hỏng" in out and "damaged" in out

    def break_page(name, data):  # a database whose pages are damaged, the manifest made to match it
        return data[:8192] + bytes(len(data) - 8192) if name == "station.db" else data
    _repack(archive, tmp_path / "broken-db.tar.gz", break_page)
    out = kiosk(station, "restore", tmp_path / "broken-db.tar.gz", "--yes", ok=False).output
    assert "integrity_check" in out

    _repack(archive, tmp_path / "other.tar.gz", station_id="K02")
    out = kiosk(station, "restore", tmp_path / "other.tar.gz", "--yes", ok=False).output
    assert "K02" in out and "--other-station" in out
    out = kiosk(station, "restore", tmp_path / "missing.tar.gz", "--yes", ok=False).output
    assert "Không tìm thấy" in out and "not found" in out
    declined = CliRunner().invoke(main, ["restore", "--station", station["source"], str(archive)], input="n\n")
    assert declined.exit_code == 1 and "Replace the station's data" in declined.output
    assert folder_state(station) == before
    assert not list(station_paths(station)["database"].parent.glob(".restore-*"))
    kiosk(station, "restore", tmp_path / "other.tar.gz", "--yes", "--other-station")


def test_backup_without_keys_needs_the_station_keys_to_restore(tmp_path, station):
    submit_many(station, 4)
    out = kiosk(station, "backup", "--without-keys", tmp_path / "nokeys.tar.gz").output
    assert "No keys in it" in out
    with tarfile.open(tmp_path / "nokeys.tar.gz") as tar:
        assert set(tar.getnames()) == {"manifest.json", "station.db", "central-keys.json"}
    key_file = station_paths(station)["payload_key"]
    right_key = key_file.read_bytes()
    key_file.write_bytes(bytes(32))  # another key in the data folder
    before = folder_state(station)
    out = kiosk(station, "restore", tmp_path / "nokeys.tar.gz", "--yes", ok=False).output
    assert "payload.key" in out and "does not open" in out
    assert folder_state(station) == before
    key_file.write_bytes(right_key)
    out = kiosk(station, "restore", tmp_path / "nokeys.tar.gz", "--yes").output
    assert "4 dossiers waiting" in out
    assert not list(key_file.parent.glob("payload.key.before-restore-*"))  # the key was left in place
    assert key_file.read_bytes() == right_key
