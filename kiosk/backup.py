"""Backing up a station while it runs, and putting a backup back (``kiosk backup`` / ``kiosk restore``).

A backup is one file, a gzip'd tar: ``manifest.json`` first, then ``station.db`` (copied with SQLite's
online backup API, which gives a consistent copy under WAL while the station keeps writing, then checked
with ``integrity_check``), ``central-keys.json`` and, unless made ``--without-keys``, the station's secret
keys ``payload.key`` (without it the waiting dossiers cannot be opened) and ``station.ed25519``. So the
file is as secret as the keys: it is written readable by its owner only. The manifest names the station,
the time, the incarnation, counts and the sha256 of every file; a restore checks all of it before it
changes anything, and keeps every file it replaces as ``<name>.before-restore-<time>``.

A restore starts a new *incarnation* of the station (``kiosk.db.begin_incarnation``): tracking codes from
then on carry another letter, so a code issued after the backup was taken is never issued again. The
highest incarnation known is also kept in ``<data>/incarnation``, outside the database, where a restore of
any backup finds it even when the database it replaces is lost.

The archive helpers here (snapshot, write, read, install) serve the central's backups too
(sync/central_backup.py).
"""
import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import tarfile
import tempfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

from . import audit
from . import db as station_db
from .config import data_dir
from .keyfile import fsync_folder, owned_like_folder

STATION_FORMAT = "dvc-kiosk-station-backup/1"
STATION_FILES = ("station.db", "payload.key", "station.ed25519", "central-keys.json")
SECRET_FILES = ("payload.key", "station.ed25519")
MANIFEST = "manifest.json"


class BackupError(Exception):
    """A backup that cannot be made or put back; the message is Vietnamese first, then English."""

    def __init__(self, vi: str, en: str):
        super().__init__(f"{vi} / {en}")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# -- files, written durably ----------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install(source: Path, target: Path, stamp: str, companions: tuple[str, ...] = ()) -> list[Path]:
    """Put ``source`` at ``target`` atomically (a copy beside the target, fsync, rename). What was there is
    kept, never deleted, as ``<name>.before-restore-<stamp>``, with its ``companions`` (SQLite's -wal and
    -shm, which must never meet the new file). Returns the paths kept; a key already in place is left."""
    if target.is_file() and not companions and sha256_file(target) == sha256_file(source):
        return []
    staged = target.with_name(target.name + ".restoring")
    with open(source, "rb") as src, open(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    owned_like_folder(staged)
    aside = target.with_name(f"{target.name}.before-restore-{stamp}")
    for n in range(2, 1000):  # two restores within a second
        if not any(aside.with_name(aside.name + end).exists() for end in ("", *companions)):
            break
        aside = target.with_name(f"{target.name}.before-restore-{stamp}-{n}")
    kept = []
    if target.exists():
        os.link(target, aside)  # the old file stays at its name until the rename below replaces it
        kept.append(aside)
    for suffix in companions:
        extra = target.with_name(target.name + suffix)
        if extra.exists():
            os.replace(extra, aside.with_name(aside.name + suffix))
            kept.append(aside.with_name(aside.name + suffix))
    os.replace(staged, target)
    fsync_folder(target.parent)
    return kept


# -- SQLite ---------------------------------------------------------------------------------------------

def integrity_problem(path: Path) -> str | None:
    """What ``PRAGMA integrity_check`` finds wrong with a database file, or None when it is whole."""
    try:
        conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if rows == ["ok"] else "; ".join(rows[:3])


def snapshot_sqlite(source: Path, copy: Path) -> None:
    """Copy a live database with the online backup API (one step: one consistent read, whatever others
    write meanwhile) into a file that stands alone (rollback journal, no -wal), then check the copy."""
    if not Path(source).is_file():
        raise BackupError(f"Không có cơ sở dữ liệu {source}", f"no database at {source}")
    src, dst = sqlite3.connect(source, timeout=30), sqlite3.connect(copy)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        dst.close()
        src.close()
    problem = integrity_problem(copy)
    if problem:
        raise BackupError(f"Bản sao của cơ sở dữ liệu bị lỗi ({problem})",
                          f"the copy of the database fails integrity_check ({problem})")


def processes_holding(path: Path) -> list[int]:
    """Other processes that have the database (or its -wal) open, as far as /proc lets this user see."""
    names = {str(Path(path).resolve()), str(Path(path).resolve()) + "-wal"}
    found = []
    for fd_folder in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_folder.parent.name)
        if pid == os.getpid():
            continue
        try:
            if any(os.readlink(fd) in names for fd in fd_folder.iterdir()):
                found.append(pid)
        except OSError:  # gone, or another user's
            continue
    return found


# -- the archive ----------------------------------------------------------------------------------------

def backup_target(dest: Path, name: str) -> Path:
    """DEST itself, or a new file named after ``name`` and the time when DEST is a folder."""
    dest = Path(dest)
    target = dest / f"{name}-{utc_stamp()}.tar.gz" if dest.is_dir() else dest
    if target.exists():
        raise BackupError(f"{target} đã có, không ghi đè", f"{target} already exists; not overwritten")
    if not target.parent.is_dir():
        raise BackupError(f"Không có thư mục {target.parent}", f"no folder {target.parent}")
    return target


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    return info


def write_archive(target: Path, manifest: dict, files: dict[str, Path]) -> dict:
    """One gzip'd tar, ``manifest.json`` first with the sha256 of every file, written 0600, durably and
    atomically (nothing at ``target`` until it is whole). Returns the manifest as written."""
    manifest = {**manifest, "files": {name: sha256_file(path) for name, path in files.items()}}
    body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    tmp = target.with_name(target.name + ".part")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            info = _plain(tarfile.TarInfo(MANIFEST))
            info.size, info.mtime = len(body), int(datetime.now().timestamp())
            tar.addfile(info, io.BytesIO(body))
            for name, path in files.items():
                tar.add(path, arcname=name, recursive=False, filter=_plain)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, target)
    fsync_folder(target.parent)
    return manifest


def read_archive(archive: Path, staging: Path, expected_format: str, allowed: tuple[str, ...]) -> dict:
    """Unpack, in one pass, the files the manifest lists into ``staging``, checking each one's sha256.
    Returns the manifest; raises BackupError for a missing, damaged or foreign file."""
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"Không tìm thấy bản sao lưu {archive}", f"backup file not found: {archive}")
    damaged = BackupError(f"Bản sao lưu {archive} bị hỏng hoặc không phải bản sao lưu",
                          f"{archive} is damaged or not a backup")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = iter(tar)
            first = next(members, None)
            manifest = json.loads(tar.extractfile(first).read()) if first and first.name == MANIFEST else {}
            files = manifest.get("files") if manifest.get("format") == expected_format else None
            if not isinstance(files, dict) or set(files) - set(allowed):
                raise damaged
            unpacked = set()
            for member in members:  # only the files listed, each once, and only into staging
                if not member.isfile() or member.name not in files or member.name in unpacked:
                    raise damaged
                with open(staging / member.name, "wb") as out:
                    shutil.copyfileobj(tar.extractfile(member), out)
                if sha256_file(staging / member.name) != files[member.name]:
                    raise BackupError(f"{member.name} trong bản sao lưu không khớp mã băm: tệp đã bị hỏng",
                                      f"{member.name} in the backup does not match its sha256: it is damaged")
                unpacked.add(member.name)
            if unpacked != set(files):
                raise damaged
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, AttributeError):
        raise damaged from None
    return manifest


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
                "dossiers": conn.execute("SELECT COUNT(*) FROM dossiers").fetchone()[0],
                "pending": conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]}
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

    from .sealing import open_sealed

    conn = sqlite3.connect(database)
    try:
        row = (conn.execute("SELECT submission_id, payload_sealed FROM dossiers WHERE payload_sealed IS NOT NULL "
                            "LIMIT 1").fetchone()
               or conn.execute("SELECT id, answers_sealed FROM drafts LIMIT 1").fetchone())
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
    from sync import schema

    station_db.migrate(database)
    schema.migrate(database)
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
