"""Backing up a station while it runs, and putting a backup back (``kiosk backup`` / ``kiosk restore``).

A backup is one file, a gzip'd tar: ``manifest.json`` first, then ``station.db`` (copied with SQLite's
online backup API, which gives a consistent copy under WAL while the station keeps writing, then checked
with ``integrity_check``), ``central-keys.json`` and, unless made ``--without-keys``, the station's secret
keys ``payload.key`` (without it the waiting dossiers cannot be opened) and ``station.ed25519``. So the
file is as secret as the keys: it is written readable by its owner only. The manifest names the station,
the time, the incarnation, counts and the sha256 of every file; a restore checks all of it before it
changes anything, and keeps every file it replaces as ``<name>.before-restore-<time>``.

A restore starts a new *incarnation* of the station (``kiosk.core.db.begin_incarnation``): tracking codes from
then on carry another letter, so a code issued after the backup was taken is never issued again. The
highest incarnation known is also kept in ``<data>/incarnation``, outside the database, where a restore of
any backup finds it even when the database it replaces is lost.

The archive helpers (snapshot, write, read, install) are in kiosk/core/archive.py; the central's backups
(sync/central_backup.py) use them too.
"""
import socket
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .core import audit, dossiers, drafts, outbox
from .core.archive import (BackupError, backup_target, install, integrity_problem, processes_holding, read_archive,
                           snapshot_sqlite, utc_stamp, write_archive)
from .core import db as station_db
from .core.config import data_dir

STATION_FORMAT = "dvc-kiosk-station-backup/1"
STATION_FILES = ("station.db", "payload.key", "station.ed25519", "central-keys.json")
SECRET_FILES = ("payload.key", "station.ed25519")


def incarnation_of(path: Path) -> int:
    """The incarnation of the database at ``path``; 0 when it is missing or cannot be read."""
    if not Path(path).is_file():
        return 0
    try:
        conn = sqlite3.connect(path, timeout=10)
        try:
            return station_db.incarnation(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return 0


# -- the station ----------------------------------------------------------------------------------------

def station_files(config: dict) -> dict[str, Path]:
    """Where each file a station backup holds lives (sync's station_paths: the central keys may be
    elsewhere)."""
    from sync.worker import station_paths

    paths = station_paths(config)
    return {"station.db": paths["database"], "payload.key": paths["payload_key"],
            "station.ed25519": paths["station_key"], "central-keys.json": paths["central_keys"]}


def _public_key(path: Path) -> str | None:
    """The station's public signing key (not secret; a restore without keys compares it)."""
    from cryptography.hazmat.primitives import serialization

    from sync.keys import public_b64

    if not path.is_file():
        return None
    return public_b64(serialization.load_pem_private_key(path.read_bytes(), password=None))


def _counts(database: Path) -> dict:
    conn = sqlite3.connect(database)
    try:
        return {"incarnation": incarnation_of(database),
                "dossiers": dossiers.count(conn), "pending": outbox.pending_count(conn)}
    finally:
        conn.close()


def make_backup(config: dict, dest: Path, with_keys: bool = True) -> dict:
    """Write one consistent backup of a running station; returns its manifest and ``path``."""
    folder, paths = data_dir(config), station_files(config)
    target = backup_target(dest, f"kiosk-{config['station']['id']}")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".backup-") as tmp:
        copy = Path(tmp) / "station.db"
        snapshot_sqlite(paths["station.db"], copy)
        counts = _counts(copy)
        files = {"station.db": copy, **{name: paths[name] for name in STATION_FILES[1:]
                                        if paths[name].is_file() and (with_keys or name not in SECRET_FILES)}}
        manifest = write_archive(target, {
            "format": STATION_FORMAT, "station_id": config["station"]["id"],
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **counts,
            "keys_included": with_keys, "station_public_key": _public_key(paths["station.ed25519"])}, files)
    station_db.note_incarnation(folder, counts["incarnation"])
    return {**manifest, "path": target}


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def refuse_if_running(config: dict, database: Path) -> None:
    """A restore under a running web app would lose what it writes (and it keeps the old payload key in
    memory): refuse while the station's address answers or another process has the database open."""
    host, port = config["server"]["host"], config["server"]["port"]
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if _answers(host, port):
        raise BackupError(f"Ứng dụng web của trạm đang chạy ({host}:{port}): dừng nó trước (systemctl stop kiosk)",
                          f"the station's web app answers on {host}:{port}: stop it first (systemctl stop kiosk)")
    holders = processes_holding(database)
    if holders:
        pids = ", ".join(map(str, holders))
        raise BackupError(f"Tiến trình {pids} đang mở {database}: dừng ứng dụng web trước (systemctl stop kiosk)",
                          f"process {pids} has {database} open: stop the web app first (systemctl stop kiosk)")


def _sealed_payload_opens(database: Path, key: bytes) -> bool:
    """Whether ``key`` opens a sealed payload (a dossier's, else a draft's) in the database; True when there
    is none to try."""
    from cryptography.exceptions import InvalidTag

    from .core.sealing import open_sealed

    conn = sqlite3.connect(database)
    try:
        row = dossiers.one_sealed_payload(conn) or drafts.one_sealed(conn)
    finally:
        conn.close()
    if row is None:
        return True
    try:
        open_sealed(key, row[1], row[0])
    except (InvalidTag, ValueError):
        return False
    return True


def _check_present_keys(paths: dict, manifest: dict, database: Path) -> None:
    """For a backup made without keys: the keys in the data folder must be the ones it was made with."""
    key_file = paths["payload.key"]
    if not key_file.is_file() or not _sealed_payload_opens(database, key_file.read_bytes()):
        raise BackupError(f"Bản sao lưu không có khóa, và {key_file} không mở được hồ sơ trong đó",
                          f"the backup holds no keys and {key_file} does not open its dossiers")
    expected = manifest.get("station_public_key")
    if expected and _public_key(paths["station.ed25519"]) != expected:
        raise BackupError(f"Bản sao lưu không có khóa, và {paths['station.ed25519']} không phải khóa của trạm lúc sao lưu",
                          f"the backup holds no keys and {paths['station.ed25519']} is not the station key it was made with")


def check_station_backup(config: dict, manifest: dict, staging: Path, other_station: bool) -> None:
    station_id = config["station"]["id"]
    if manifest.get("station_id") != station_id and not other_station:
        raise BackupError(f"Bản sao lưu của trạm {manifest.get('station_id')}, không phải {station_id} "
                          "(--other-station nếu đúng ý)",
                          f"the backup is of station {manifest.get('station_id')}, not {station_id} "
                          "(--other-station to restore it anyway)")
    problem = integrity_problem(staging / "station.db")
    if problem:
        raise BackupError(f"Cơ sở dữ liệu trong bản sao lưu bị lỗi ({problem})",
                          f"the database in the backup fails integrity_check ({problem})")
    if not manifest.get("keys_included", True):
        _check_present_keys(station_files(config), manifest, staging / "station.db")


def begin_restored_life(database: Path, folder: Path, at_least: int, manifest: dict) -> dict:
    """Bring the restored database up to this code's schema, then start its new incarnation, numbered past
    ``at_least`` and noted in the marker before the commit."""
    station_db.migrate(database)
    conn = station_db.connect(database)
    try:
        with station_db.write_transaction(conn):
            n = station_db.begin_incarnation(conn, "restore", at_least=at_least)  # notes it in the marker
            audit.append(conn, "operator", "station.restored", None,
                         {"incarnation": n, "backup_created_at": manifest.get("created_at")})
        counts = _counts(database)
    finally:
        conn.close()
    return counts


def restore(config: dict, archive: Path, other_station: bool = False, confirm=lambda manifest: None) -> dict:
    """Put a backup back; the station's web app and sync worker must be stopped (the worker's lock is held
    meanwhile, so it cannot start). ``confirm(manifest)`` may raise to stop before anything changes.
    Returns the new counts, the manifest and the files kept aside."""
    from sync.worker import WorkerRunning, hold_worker_lock

    folder, paths = data_dir(config), station_files(config)
    try:
        lock = hold_worker_lock(folder)
    except WorkerRunning as exc:
        raise BackupError(f"Tiến trình đồng bộ đang chạy (pid {exc}): dừng nó trước (systemctl stop kiosk-sync)",
                          f"the sync worker runs (pid {exc}): stop it first (systemctl stop kiosk-sync)") from None
    try:
        refuse_if_running(config, paths["station.db"])
        with tempfile.TemporaryDirectory(dir=folder, prefix=".restore-") as tmp:
            manifest = read_archive(archive, Path(tmp), STATION_FORMAT, STATION_FILES)
            check_station_backup(config, manifest, Path(tmp), other_station)
            confirm(manifest)
            at_least = max(station_db.read_marker(folder), incarnation_of(paths["station.db"]))
            stamp, kept = utc_stamp(), []
            for name in manifest["files"]:
                kept += install(Path(tmp) / name, paths[name], stamp, ("-wal", "-shm") if name == "station.db" else ())
        try:
            counts = begin_restored_life(paths["station.db"], folder, at_least, manifest)
        except (sqlite3.Error, OSError) as exc:
            raise BackupError(f"Đã chép bản sao lưu vào nhưng chưa bắt đầu thế hệ mới ({exc}): chạy lại lệnh "
                              "khôi phục trước khi mở trạm",
                              f"the backup's files are in place but no new incarnation began ({exc}): run the "
                              "restore again before starting the station") from None
    finally:
        lock.close()
    return {**counts, "manifest": manifest, "kept": kept}
