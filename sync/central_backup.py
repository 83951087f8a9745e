"""Backing up the reference central and putting a backup back (``kiosk central backup`` / ``restore`` /
``mark-restored``), in the station's archive format (kiosk.backup): one gzip'd tar, 0600, a manifest
with the sha256 of every file, checked before anything changes.

- SQLite: the database copied with the online backup API while the central runs (``integrity_check`` on
  the copy) and the central's private keys ``central.ed25519`` and ``central.x25519``, and
  ``central-documents.key``, the key the dossier documents in the database are sealed with (it is never in
  the database file itself: a copy of the database alone reveals no document), and ``central-catalog.ed25519``,
  the key catalog releases are signed with (``catalog-releases/`` is not in the archive: after a restore,
  publish again with ``--release`` above the highest any station has; docs/catalog-releases.md).
- PostgreSQL: the keys and, when ``pg_dump`` is on PATH, ``pg_dump --format=custom`` of the database as
  ``central.pgdump``; else the pg_dump command to run is printed. The operator restores it with
  ``pg_restore``, then runs ``kiosk central mark-restored`` (docs/deploy.md).
- ``blob-store/`` is not in the archive: its files are named by their sha256 and never change, so it is
  copied with rsync *after* the database (every blob a backed-up submission names is then in the copy):
  ``rsync -a --delete --exclude /partial/``. Like the documents in the database, the complete blobs are
  sealed (with a key derived from ``central-documents.key``, which the archive carries) and, with
  ``--delete``, the retention drops them from the copy as it drops documents from the next backup;
  unfinished uploads (``partial/``, plain until complete) are not copied.
- ``code-watermark.json`` is never backed up nor touched by a restore: it remembers the official codes
  already reserved, and the store raises each day's sequence past it when it opens a restored database.

After a restore the store's generation is raised (``mark_restored``): every station sees it in its next
exchange and sends again what the central lost.
"""
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from kiosk.core.archive import (BackupError, backup_target, install, integrity_problem, processes_holding,
                               read_archive, snapshot_sqlite, utc_stamp, write_archive)

FORMAT = "dvc-central-backup/1"
KEYS = ("central.ed25519", "central.x25519", "central-documents.key", "central-catalog.ed25519")
FILES = ("central.sqlite3", "central.pgdump", *KEYS)


def is_postgres(database: str) -> bool:
    return bool(re.match(r"postgres(ql)?://", database))


def database_of(data_dir: Path, database: str | None) -> str:
    return database or str(Path(data_dir) / "central.sqlite3")


def pg_command(tool: str, url: str, *args: str) -> tuple[list[str], dict]:
    """``tool`` (pg_dump, pg_restore) for the database at ``url``: the password, if the URL has one, goes
    in the environment, not on the command line where ``ps`` shows it."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    env = dict(os.environ)
    if "password" in params:
        env["PGPASSWORD"] = str(params.pop("password"))
    return [tool, *args, "--dbname", make_conninfo(**params)], env


def _pg_dump(url: str, out: Path) -> Path | None:
    """Dump the database in pg_dump's custom format, or None when pg_dump is not installed here."""
    if shutil.which("pg_dump") is None:
        return None
    command, env = pg_command("pg_dump", url, "--format=custom", "--file", str(out))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError("pg_dump không chạy được", f"pg_dump failed: {done.stderr.strip()[-300:]}")
    return out


def _facts(database: str) -> dict:
    from .central_store import open_store

    store = open_store(database)  # no watermark: reading the store changes nothing of it
    try:
        return {"store": store.identity(), "submissions": store.count()}
    finally:
        store.close()


def backup_central(data_dir: Path, database: str | None, dest: Path) -> dict:
    """Write one backup of the central; returns its manifest, ``path`` and, for PostgreSQL without
    pg_dump here, ``pg_dump_command`` (to run elsewhere)."""
    data_dir, database = Path(data_dir), database_of(data_dir, database)
    target = backup_target(dest, "central")
    extra = {}
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".backup-") as tmp:
        files = {name: data_dir / name for name in KEYS if (data_dir / name).is_file()}
        if not is_postgres(database):
            snapshot_sqlite(Path(database), Path(tmp) / "central.sqlite3")
            files["central.sqlite3"] = Path(tmp) / "central.sqlite3"
        elif _pg_dump(database, Path(tmp) / "central.pgdump"):
            files["central.pgdump"] = Path(tmp) / "central.pgdump"
        else:
            command, _env = pg_command("pg_dump", database, "--format=custom", "--file", "central.pgdump")
            extra["pg_dump_command"] = " ".join(command)
        manifest = write_archive(target, {
            "format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "database": "postgresql" if is_postgres(database) else "sqlite", **_facts(database)}, files)
    return {**manifest, **extra, "path": target}


def _generation(database: str) -> int:
    """The generation of the store about to be replaced; 0 when it cannot be read."""
    if not Path(database).is_file():
        return 0
    try:
        return _facts(database)["store"]["generation"]
    except sqlite3.DatabaseError:
        return 0


def mark_restored(data_dir: Path, database: str | None, at_least: int = 0) -> dict:
    """Open the central on its restored database and raise the store's generation once: past ``at_least``
    (the generation it had before the restore, when known). The store may have found out by itself when
    opening (the code watermark); then it is not raised again."""
    from .central import open_central

    central = open_central(data_dir, database)
    try:
        identity = central.store.identity()
        if not (central.store.restored_at_start and identity["generation"] > at_least):
            identity = central.store.mark_restored(at_least=at_least)
    finally:
        central.store.close()
    return identity


def restore_central(data_dir: Path, database: str | None, archive: Path) -> dict:
    """Put a SQLite backup back (the central stopped), then mark the store restored. Returns the manifest,
    the new identity and the files kept aside."""
    data_dir, database = Path(data_dir), database_of(data_dir, database)
    if is_postgres(database):
        raise BackupError("PostgreSQL: khôi phục bằng pg_restore rồi chạy kiosk central mark-restored (docs/deploy.md)",
                          "PostgreSQL: restore with pg_restore, then run kiosk central mark-restored (docs/deploy.md)")
    holders = processes_holding(Path(database))
    if holders:
        pids = ", ".join(map(str, holders))
        raise BackupError(f"Hệ thống trung tâm đang chạy (tiến trình {pids}): dừng nó trước",
                          f"the central runs (process {pids} has its database open): stop it first")
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".restore-") as tmp:
        manifest = read_archive(archive, Path(tmp), FORMAT, FILES)
        if "central.sqlite3" not in manifest["files"]:
            raise BackupError("Bản sao lưu không có cơ sở dữ liệu SQLite", "the backup holds no SQLite database")
        problem = integrity_problem(Path(tmp) / "central.sqlite3")
        if problem:
            raise BackupError(f"Cơ sở dữ liệu trong bản sao lưu bị lỗi ({problem})",
                              f"the database in the backup fails integrity_check ({problem})")
        at_least = max(_generation(database), int(manifest.get("store", {}).get("generation", 0)))
        stamp, kept = utc_stamp(), []
        kept += install(Path(tmp) / "central.sqlite3", Path(database), stamp, ("-wal", "-shm"))
        for name in KEYS:
            if name in manifest["files"]:
                kept += install(Path(tmp) / name, data_dir / name, stamp)
    return {"manifest": manifest, "identity": mark_restored(data_dir, database, at_least), "kept": kept}
