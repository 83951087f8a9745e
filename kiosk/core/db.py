"""The station database: SQLite in WAL mode, fsync on every commit, schema by sqlite-utils migrations
(kiosk/core/migrations.py).

The web app's connections (one per server thread, kept between requests) are kiosk/web.py's ``get_db``;
the sync worker and the commands open their own with ``connect``.
"""
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from .keyfile import FILE_MODE, write_durably
from .migrations import adopt_previous_sets, migrations


def incarnation(conn: sqlite3.Connection) -> int:
    """The station's current incarnation: 0 until its database is first restored or found reused."""
    return conn.execute("SELECT coalesce(max(n), 0) FROM incarnations").fetchone()[0]


def begin_incarnation(conn: sqlite3.Connection, reason: str, at_least: int = 0) -> int:
    """Start a new incarnation (inside the caller's transaction, if any) and return its number: one more
    than the current one, ``at_least``, and the marker file kept beside the database (so a database put
    back from an older backup still starts past every incarnation this station has begun). The marker is
    written before the caller commits."""
    from datetime import datetime, timezone

    folder = database_folder(conn)
    n = max(incarnation(conn), at_least, read_marker(folder) if folder else 0) + 1
    conn.execute("INSERT INTO incarnations (n, started_at, reason) VALUES (?, ?, ?)",
                 (n, datetime.now(timezone.utc).isoformat(timespec="seconds"), reason))
    if folder:
        note_incarnation(folder, n)
    return n


INCARNATION_MARKER = "incarnation"  # <data>/incarnation: the highest incarnation begun, outside the database


def database_folder(conn: sqlite3.Connection) -> Path | None:
    """The folder of the connection's main database file (None for an in-memory one)."""
    row = conn.execute("PRAGMA database_list").fetchone()
    return Path(row[2]).parent if row and row[2] else None


def read_marker(folder: Path) -> int:
    try:
        return int((Path(folder) / INCARNATION_MARKER).read_text().strip())
    except (OSError, ValueError):
        return 0


def note_incarnation(folder: Path, n: int) -> None:
    """Keep the highest incarnation the station has begun in ``<data>/incarnation`` (never lowered)."""
    if n > read_marker(folder):
        write_durably(Path(folder) / INCARNATION_MARKER, f"{n}\n".encode(), FILE_MODE)


def _owner_only(path: str | Path) -> None:
    """Make a missing database file 0600 before SQLite opens it: SQLite gives its -wal and -shm files the
    main file's mode, so none of the three is readable by others, whatever the umask. One already there is
    left as it is (the app narrows an older, wider one at start: keyfile.keep_private)."""
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except OSError:  # there already, or a folder SQLite will say more about
        pass


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the database with the settings every connection needs (they are per connection in SQLite)."""
    _owner_only(path)
    conn = sqlite3.connect(str(path), timeout=10, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before it returns, so a power cut after "submitted" loses nothing.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(path: str | Path) -> None:
    """Bring the database at ``path`` up to this code's schema (the one set in kiosk/core/migrations.py),
    in one transaction: the previous release's sync set is adopted, then what is pending is applied, or
    nothing is."""
    conn = connect(path)
    try:
        database = sqlite_utils.Database(conn)
        with write_transaction(conn):
            adopt_previous_sets(conn)
            migrations.apply(database)
    finally:
        conn.close()


# SQLite lets one writer in at a time and makes the others poll with growing sleeps (up to 100 ms).
# Threads of this process queue on a lock instead, which hands the database over without sleeping;
# other processes (the sync worker) still meet SQLite's own busy timeout.
_writer = threading.Lock()


@contextmanager
def write_transaction(conn: sqlite3.Connection, durable: bool = True):
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front so two writers never interleave.

    ``durable=False`` is for writes that may be lost in a power cut (a draft's latest answer, which the
    citizen would type again): its commit skips the fsync. A dossier is always written durably.
    """
    with _writer:
        if not durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            else:
                try:
                    conn.commit()
                except sqlite3.Error:
                    # A COMMIT refused (the disk is full) may leave the transaction open; SQLite's advice
                    # is an explicit ROLLBACK, or this connection refuses every later BEGIN.
                    if conn.in_transaction:
                        conn.rollback()
                    raise
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous=FULL")


def storage_problem(exc: BaseException) -> str | None:
    """What is wrong with the station's storage, in the words the log and staff are given, when ``exc``
    says so ("disk is full", "data folder is read-only", ...); None for any other error. SQLite reports a
    full disk as "database or disk is full" (SQLITE_FULL), the OS as ENOSPC."""
    import errno

    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code of an extended one
        text = str(exc).lower()
        if code == sqlite3.SQLITE_FULL or "database or disk is full" in text:
            return "disk is full"
        if code == sqlite3.SQLITE_READONLY or "readonly database" in text:
            return "data folder is read-only"
        if code == sqlite3.SQLITE_IOERR or "disk i/o error" in text:
            return "disk I/O error"
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in text:
            return "database is damaged"
        return None
    if isinstance(exc, OSError):
        return {errno.ENOSPC: "disk is full", errno.EDQUOT: "disk is full", errno.EROFS: "data folder is read-only",
                errno.EIO: "disk I/O error"}.get(exc.errno)
    return None
