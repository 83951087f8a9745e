"""The station database: SQLite in WAL mode, fsync on every commit, schema by sqlite-utils migrations.

The web app's connections (one per server thread, kept between requests) are kiosk/web.py's ``get_db``;
the sync worker and the commands open their own with ``connect``.
"""
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .keyfile import write_durably

migrations = Migrations("dvc-kiosk")


@migrations()
def m001_dossiers(db: sqlite_utils.Database):
    db.execute(
        """
        CREATE TABLE dossiers (
            submission_id TEXT PRIMARY KEY,          -- UUID made here at submit: the sync idempotency key
            tracking_code TEXT NOT NULL UNIQUE,
            station_id TEXT NOT NULL,
            channel TEXT NOT NULL,                   -- kiosk | counter | mobile
            procedure_code TEXT NOT NULL,
            procedure_slug TEXT NOT NULL,
            procedure_version TEXT NOT NULL,
            submitted_at TEXT NOT NULL,              -- UTC, ISO 8601
            payload_sealed BLOB,                     -- answers, encrypted; NULL once purged
            payload_sha256 TEXT NOT NULL,            -- of the canonical plaintext: the content hash for sync
            supersedes TEXT REFERENCES dossiers(submission_id),
            central_code TEXT,                       -- mã hồ sơ, once the central acknowledges
            status TEXT NOT NULL DEFAULT 'queued'
        )
        """
    )
    # A submitted dossier is immutable: only the fields that sync and purge own may change.
    db.execute(
        """
        CREATE TRIGGER dossiers_immutable BEFORE UPDATE OF
            submission_id, tracking_code, station_id, channel, procedure_code, procedure_slug,
            procedure_version, submitted_at, payload_sha256, supersedes
        ON dossiers BEGIN SELECT RAISE(ABORT, 'submitted dossiers are immutable'); END
        """
    )
    db.execute("CREATE INDEX dossiers_tracking_compact ON dossiers(replace(tracking_code, '-', ''))")
    db.execute(
        """
        CREATE TABLE outbox (
            submission_id TEXT PRIMARY KEY REFERENCES dossiers(submission_id),
            state TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | rejected
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_error TEXT,
            enqueued_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX outbox_pending ON outbox(state, next_attempt_at)")
    db.execute(
        """
        CREATE TABLE audit_events (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            detail TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )
        """
    )
    # Append-only: the hash chain detects edits, these triggers stop the easy ones.
    db.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    )
    db.execute("CREATE TABLE daily_sequence (day TEXT PRIMARY KEY, last INTEGER NOT NULL)")
    db.execute(
        """
        CREATE TABLE drafts (
            id TEXT PRIMARY KEY,
            procedure_slug TEXT NOT NULL,
            procedure_version TEXT NOT NULL,
            answers_sealed BLOB NOT NULL,
            created_at TEXT NOT NULL,
            touched_at TEXT NOT NULL
        )
        """
    )


@migrations()
def m002_receipt_prints(db: sqlite_utils.Database):
    # Every attempt to print a receipt, first print and reprints alike: the counter's ledger counts them.
    db.execute(
        """
        CREATE TABLE receipt_prints (
            id INTEGER PRIMARY KEY,
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            requested_at TEXT NOT NULL,
            requested_by TEXT NOT NULL,            -- citizen, or the staff member who reprinted
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'pending', -- pending, or the printer's status code when done
            ok INTEGER
        )
        """
    )
    db.execute("CREATE INDEX receipt_prints_dossier ON receipt_prints(submission_id, id)")


@migrations()
def m003_counter(db: sqlite_utils.Database):
    # Staff of counter and mobile stations. PINs are argon2 hashes; lockout after repeated failures.
    db.execute(
        """
        CREATE TABLE staff (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('agent', 'supervisor')),
            secret_hash TEXT NOT NULL,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT,
            active INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL
        )
        """
    )
    # Money and reprints at the counter: every fee taken and every reprint, one row each.
    db.execute(
        """
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            local_day TEXT NOT NULL,
            staff_id INTEGER NOT NULL REFERENCES staff(id),
            kind TEXT NOT NULL CHECK (kind IN ('fee', 'reprint')),
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            amount_vnd INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX ledger_day ON ledger(local_day, staff_id)")
    db.execute(
        """
        CREATE TABLE day_closings (
            id INTEGER PRIMARY KEY,
            local_day TEXT NOT NULL UNIQUE,
            report TEXT NOT NULL,
            report_sha256 TEXT NOT NULL,
            signed_by INTEGER NOT NULL REFERENCES staff(id),
            signed_at TEXT NOT NULL
        )
        """
    )
    # Who submitted (NULL for the citizen at a kiosk), the local day, the fee due, and the applicant's
    # masked name for staff search (the full name stays sealed in the payload).
    db.execute("ALTER TABLE dossiers ADD COLUMN staff_id INTEGER REFERENCES staff(id)")
    db.execute("ALTER TABLE dossiers ADD COLUMN local_day TEXT")
    db.execute("ALTER TABLE dossiers ADD COLUMN fee_due_vnd INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE dossiers ADD COLUMN applicant_masked TEXT")
    db.execute("CREATE INDEX dossiers_day ON dossiers(local_day, staff_id)")
    db.execute("DROP TRIGGER dossiers_immutable")
    db.execute(
        """
        CREATE TRIGGER dossiers_immutable BEFORE UPDATE OF
            submission_id, tracking_code, station_id, channel, procedure_code, procedure_slug,
            procedure_version, submitted_at, payload_sha256, supersedes, staff_id, local_day, fee_due_vnd,
            applicant_masked
        ON dossiers BEGIN SELECT RAISE(ABORT, 'submitted dossiers are immutable'); END
        """
    )


@migrations()
def m004_incarnations(db: sqlite_utils.Database):
    # Each restore from a backup (and each reinstall found out by the central) starts a new incarnation of
    # the station; tracking codes carry it, so codes issued after the backup was taken are never issued
    # again. The first life of a station is incarnation 0 and has no row.
    db.execute(
        """
        CREATE TABLE incarnations (
            n INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,               -- UTC
            reason TEXT NOT NULL                    -- restore | tracking_code_taken | ...
        )
        """
    )


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
        write_durably(Path(folder) / INCARNATION_MARKER, f"{n}\n".encode(), 0o644)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the database with the settings every connection needs (they are per connection in SQLite)."""
    conn = sqlite3.connect(str(path), timeout=10, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before it returns, so a power cut after "submitted" loses nothing.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(path: str | Path, migration_set: Migrations = migrations) -> None:
    """Apply what is pending of ``migration_set`` (the station's own, or another part's such as sync's)."""
    conn = connect(path)
    try:
        migration_set.apply(sqlite_utils.Database(conn))
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
                conn.commit()
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous=FULL")
