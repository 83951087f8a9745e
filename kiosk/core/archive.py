"""Backup archives, for the station's backups (kiosk/backup.py) and the central's (sync/central_backup.py):
a consistent copy of a SQLite database taken while it is written, a gzip'd tar with a manifest of sha256
sums (written owner-only), read back with every name and hash checked, and files put back in place with
the ones they replace kept beside them.
"""
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

from .keyfile import fsync_folder, owned_like_folder

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
