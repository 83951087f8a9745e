"""Where the reference central keeps stations, submissions and status changes.

``CentralStore`` is the small interface the central's routes use; ``SqlCentralStore`` implements it once
in SQL that both SQLite (the default, one file) and PostgreSQL (a province, via psycopg) accept, with
only the placeholder style differing; the tables are made and changed by sync/central_migrations.py at
start. Blobs live in a ``BlobStore`` folder.
"""
import hashlib
import json
import os
import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from kiosk.core.keyfile import write_durably

from .central_migrations import migrate


@dataclass(frozen=True)
class Station:
    station_id: str
    public_key: str
    name: str
    enrolled_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class Receipt:
    submission_id: str
    station_id: str
    payload_sha256: str
    central_code: str
    received_at: str
    created: bool


class Conflict(Exception):
    """The submission id is known with other content (or from another station)."""


class TrackingCodeTaken(Exception):
    """The station's tracking code already names another of its dossiers (a station restored or reinstalled
    that issued the code again)."""


@dataclass(frozen=True)
class Prior:
    """What a station proves it was given for a submission before the central went back in time: the code
    and receipt time from the central's own signed acknowledgement."""
    central_code: str
    received_at: str


class CentralStore(Protocol):
    def station(self, station_id: str) -> Station | None: ...
    def enrol(self, station_id: str, public_key: str, name: str = "") -> Station: ...
    def revoke(self, station_id: str) -> bool: ...
    def receive(self, station_id: str, submission_id: str, payload_sha256: str, document_json: str,
                tracking_code: str, procedure_code: str, prior: Prior | None = None) -> Receipt: ...
    def identity(self) -> dict: ...
    def mark_restored(self, at_least: int = 0) -> dict: ...
    def head(self, station_id: str) -> int: ...
    def holds(self, station_id: str, submission_ids: list[str]) -> dict: ...
    def set_status(self, submission_id: str, status: str, actor: str) -> bool: ...
    def changes(self, station_id: str, since: int, limit: int = 500) -> list[dict]: ...
    def submissions(self, status: str | None = None, limit: int = 200) -> list[dict]: ...
    def submission(self, submission_id: str) -> dict | None: ...
    def count(self) -> int: ...


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


CODE_BLOCK = 20  # official codes reserved in the watermark file at a time


class SqlCentralStore:
    """One implementation for SQLite and PostgreSQL. ``agency_code`` starts every official dossier code.

    ``watermark`` is a small file kept *outside* the database (the central's data folder): before a code
    is issued, the block of CODE_BLOCK codes it falls in is written there. A database restored from a
    backup cannot bring it back, so at start every day's sequence is raised past the reserved block and no
    official code is issued twice (gaps of at most one block per start are the price). A database found
    behind the watermark (or an older generation) was restored: its generation is raised.
    """

    def __init__(self, connect, dialect: str, agency_code: str = "000.00.00.H00",
                 timezone_name: str = "Asia/Ho_Chi_Minh", watermark: Path | None = None):
        self._connect, self.dialect = connect, dialect
        self.agency_code, self.zone = agency_code, ZoneInfo(timezone_name)
        self._local = threading.local()
        self.watermark = Path(watermark) if watermark else None
        self._reserved: dict[str, int] = {}
        self._watermark_lock = threading.Lock()
        # The schema, and the store's identity (made once, with the database): sync/central_migrations.py.
        migrate(self._conn(), dialect)
        self._identity = self._read_identity()
        self.restored_at_start = self._apply_watermark()

    # -- who this store is, and the code watermark ------------------------------------------------------
    def _read_identity(self) -> dict:
        with self._tx() as cur:
            meta = dict(cur.all("SELECT name, value FROM store_meta", ()))
        return {"store_id": meta["store_id"], "generation": int(meta["generation"])}

    def identity(self) -> dict:
        """{"store_id", "generation"}, as the central tells stations: read at start, changed only by
        mark_restored (a restore is done with the central stopped; store_meta.restored_at says when)."""
        return dict(self._identity)

    def mark_restored(self, at_least: int = 0) -> dict:
        """Record that this database was restored from a backup: a new generation, which every station
        sees in its next exchange and answers by resending what the central no longer holds."""
        with self._tx() as cur:
            (generation,) = cur.one("SELECT value FROM store_meta WHERE name = 'generation'", ())
            new = max(int(generation), at_least) + 1
            cur.execute("UPDATE store_meta SET value = ? WHERE name = 'generation'", (str(new),))
            cur.execute("INSERT INTO store_meta (name, value) VALUES ('restored_at', ?) ON CONFLICT (name) "
                        "DO UPDATE SET value = excluded.value", (now_iso(),))
        self._identity = self._read_identity()
        self._write_watermark()
        return self.identity()

    def _read_watermark(self) -> dict:
        try:
            data = json.loads(self.watermark.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_watermark(self) -> None:
        """Merge this process's reservations into the file (the highest per day wins, so a second process
        on the same data, such as a USB import beside the server, never lowers it) and write it durably,
        under an exclusive lock."""
        if self.watermark is None:
            return
        import fcntl

        self.watermark.parent.mkdir(parents=True, exist_ok=True)
        with open(self.watermark.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            on_file = self._read_watermark()
            today = datetime.now(self.zone).strftime("%y%m%d")
            merged = {str(d): int(n) for d, n in (on_file.get("reserved") or {}).items()}
            for day, number in self._reserved.items():
                merged[day] = max(merged.get(day, 0), number)
            # Codes are only ever issued for the day of receipt (a station's proof raises the sequence in
            # the database itself): the last few days are all that matters.
            self._reserved = {d: n for d, n in merged.items() if d >= _days_before(today, 3)}
            identity = self._identity
            generation = identity["generation"]
            if on_file.get("store_id") == identity["store_id"]:
                generation = max(generation, int(on_file.get("generation") or 0))
            data = json.dumps({"store_id": identity["store_id"], "generation": generation,
                               "reserved": self._reserved}, sort_keys=True)
            write_durably(self.watermark, data.encode(), 0o644)

    def _apply_watermark(self) -> bool:
        """At start: raise each day's code sequence past the reserved block, and raise the generation
        when the database is found behind the watermark. True when a restore was found out."""
        if self.watermark is None:
            return False
        mark = self._read_watermark()
        reserved = {str(d): int(n) for d, n in (mark.get("reserved") or {}).items()}
        identity = self.identity()
        restored = False
        with self._tx() as cur:
            current = dict(cur.all("SELECT day, last FROM code_sequence", ()))
            for day, last in reserved.items():
                if current.get(day, 0) < last - 2 * CODE_BLOCK:
                    # The database is short of codes issued before the last two blocks were reserved (a
                    # block reserved by a rolled-back receipt or a second process is not a restore).
                    restored = True
                cur.execute("INSERT INTO code_sequence (day, last) VALUES (?, ?) ON CONFLICT (day) DO UPDATE "
                            "SET last = CASE WHEN excluded.last > code_sequence.last THEN excluded.last "
                            "ELSE code_sequence.last END", (day, last))
        self._reserved = reserved
        same_store = mark.get("store_id") == identity["store_id"]
        if same_store and int(mark.get("generation") or 0) > identity["generation"]:
            restored = True  # the database is an older generation than the one that last ran here
        if restored and same_store:
            self.mark_restored(at_least=int(mark.get("generation") or 0))
        else:
            self._write_watermark()
        return restored and same_store

    def _reserve(self, day: str, number: int) -> None:
        """Before code ``number`` of ``day`` is issued, make sure the watermark covers it."""
        if self.watermark is None or self._reserved.get(day, 0) >= number:
            return
        with self._watermark_lock:
            if self._reserved.get(day, 0) < number:
                self._reserved[day] = number + CODE_BLOCK - 1
                self._write_watermark()

    # -- plumbing ---------------------------------------------------------------------------------------
    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or (self.dialect == "postgres" and conn.closed):
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def _tx(self):
        """One transaction; SQLite takes the write lock up front (BEGIN IMMEDIATE) so receipts serialise."""
        conn = self._conn()
        if self.dialect == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            cur = _SqliteCursor(conn)
        else:
            cur = _PgCursor(conn.cursor())
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- stations ---------------------------------------------------------------------------------------
    def station(self, station_id: str) -> Station | None:
        with self._tx() as cur:
            row = cur.one("SELECT station_id, public_key, name, enrolled_at, revoked_at FROM stations "
                          "WHERE station_id = ?", (station_id,))
        return Station(*row) if row else None

    def enrol(self, station_id: str, public_key: str, name: str = "") -> Station:
        """Enrol (or re-key and un-revoke) a station."""
        with self._tx() as cur:
            cur.execute("INSERT INTO stations (station_id, public_key, name, enrolled_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (station_id) DO UPDATE SET public_key = excluded.public_key, "
                        "name = excluded.name, enrolled_at = excluded.enrolled_at, revoked_at = NULL",
                        (station_id, public_key, name, now_iso()))
        return self.station(station_id)

    def revoke(self, station_id: str) -> bool:
        with self._tx() as cur:
            return cur.execute("UPDATE stations SET revoked_at = ? WHERE station_id = ? AND revoked_at IS NULL",
                               (now_iso(), station_id)) > 0

    # -- submissions ------------------------------------------------------------------------------------
    def _next_code(self, cur, received: datetime) -> str:
        day = received.astimezone(self.zone).strftime("%y%m%d")
        (last,) = cur.one("INSERT INTO code_sequence (day, last) VALUES (?, 1) ON CONFLICT (day) "
                          "DO UPDATE SET last = code_sequence.last + 1 RETURNING last", (day,))
        self._reserve(day, last)
        return f"{self.agency_code}-{day}-{last:05d}"

    def _keep_code(self, cur, prior: Prior) -> bool:
        """Give a resent submission back the code it had before a restore, unless another submission
        holds it now; the day's sequence is raised past it so it is not issued again."""
        if cur.one("SELECT 1 FROM submissions WHERE central_code = ?", (prior.central_code,)):
            return False
        prefix, day, number = (prior.central_code.rsplit("-", 2) + ["", ""])[:3]
        if prefix == self.agency_code and day.isdigit() and number.isdigit():
            cur.execute("INSERT INTO code_sequence (day, last) VALUES (?, ?) ON CONFLICT (day) DO UPDATE "
                        "SET last = CASE WHEN excluded.last > code_sequence.last THEN excluded.last "
                        "ELSE code_sequence.last END", (day, int(number)))
            self._reserve(day, int(number))
        return True

    def _record_change(self, cur, station_id: str, submission_id: str, status: str, at: str, actor: str):
        # The per-station sequence is taken under the station row's lock, so changes commit in seq order
        # and a reader of ``since=N`` never skips one that commits later with a smaller number.
        (seq,) = cur.one("UPDATE stations SET last_change = last_change + 1 WHERE station_id = ? "
                         "RETURNING last_change", (station_id,))
        cur.execute("INSERT INTO changes (station_id, seq, submission_id, status, at, actor) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (station_id, seq, submission_id, status, at, actor))

    def _existing(self, cur, submission_id: str, station_id: str, payload_sha256: str) -> Receipt | None:
        row = cur.one("SELECT station_id, payload_sha256, central_code, received_at FROM submissions "
                      "WHERE submission_id = ?", (submission_id,))
        if row is None:
            return None
        if (row[0], row[1]) != (station_id, payload_sha256):
            raise Conflict(submission_id)
        return Receipt(submission_id, row[0], row[1], row[2], row[3], created=False)

    def receive(self, station_id, submission_id, payload_sha256, document_json, tracking_code,
                procedure_code, prior: Prior | None = None) -> Receipt:
        """Record a submission once: the first time gets a new official code (or, resent after a restore
        with the central's own earlier acknowledgement as proof, the code and time it had then); the same
        again gets the same receipt; the same id with other content raises Conflict; a tracking code the
        station already used for another dossier raises TrackingCodeTaken."""
        with self._tx() as cur:
            existing = self._existing(cur, submission_id, station_id, payload_sha256)
            if existing:
                return existing
            holder = cur.one("SELECT submission_id FROM submissions WHERE station_id = ? AND tracking_code = ?",
                             (station_id, tracking_code))
            if holder and holder[0] != submission_id:
                raise TrackingCodeTaken(tracking_code)
            if holder:  # this very submission, committed meanwhile by a concurrent first receipt (PostgreSQL)
                return self._existing(cur, submission_id, station_id, payload_sha256)
            if prior is not None and self._keep_code(cur, prior):
                code, at = prior.central_code, prior.received_at
            else:
                received = datetime.now(timezone.utc)
                at = received.isoformat(timespec="milliseconds")
                code = self._next_code(cur, received)
            inserted = cur.execute(
                "INSERT INTO submissions (submission_id, station_id, payload_sha256, central_code, tracking_code,"
                " procedure_code, document, received_at, status, status_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (submission_id) DO NOTHING",
                (submission_id, station_id, payload_sha256, code, tracking_code, procedure_code, document_json,
                 at, "received", at))
            if inserted:
                self._record_change(cur, station_id, submission_id, "received", at, "central")
                return Receipt(submission_id, station_id, payload_sha256, code, at, created=True)
        # Lost a race with a concurrent first receipt (PostgreSQL, READ COMMITTED): read the winner's.
        with self._tx() as cur:
            return self._existing(cur, submission_id, station_id, payload_sha256)

    def set_status(self, submission_id: str, status: str, actor: str) -> bool:
        with self._tx() as cur:
            row = cur.one("SELECT station_id, status FROM submissions WHERE submission_id = ?", (submission_id,))
            if row is None or row[1] == status:
                return False
            at = now_iso()
            cur.execute("UPDATE submissions SET status = ?, status_at = ? WHERE submission_id = ?",
                        (status, at, submission_id))
            self._record_change(cur, row[0], submission_id, status, at, actor)
            return True

    def head(self, station_id: str) -> int:
        """The station's latest change number: a station whose cursor is past it saw a newer store."""
        with self._tx() as cur:
            row = cur.one("SELECT last_change FROM stations WHERE station_id = ?", (station_id,))
        return int(row[0]) if row else 0

    def holds(self, station_id: str, submission_ids: list[str]) -> dict:
        """{submission_id: payload_sha256} for those of ``submission_ids`` this store holds from the station."""
        if not submission_ids:
            return {}
        marks = ", ".join("?" for _ in submission_ids)
        with self._tx() as cur:
            rows = cur.all(f"SELECT submission_id, payload_sha256 FROM submissions WHERE station_id = ? "
                           f"AND submission_id IN ({marks})", (station_id, *submission_ids))
        return dict(rows)

    def changes(self, station_id: str, since: int, limit: int = 500) -> list[dict]:
        with self._tx() as cur:
            rows = cur.all("SELECT c.seq, c.submission_id, c.status, c.at, s.central_code FROM changes c "
                           "JOIN submissions s ON s.submission_id = c.submission_id "
                           "WHERE c.station_id = ? AND c.seq > ? ORDER BY c.seq LIMIT ?",
                           (station_id, since, limit))
        return [dict(zip(("seq", "submission_id", "status", "at", "central_code"), r)) for r in rows]

    _COLUMNS = ("submission_id", "station_id", "central_code", "tracking_code", "procedure_code", "received_at",
                "status", "status_at", "payload_sha256")

    def submissions(self, status: str | None = None, limit: int = 200) -> list[dict]:
        where, args = ("WHERE status = ?", (status, limit)) if status else ("", (limit,))
        with self._tx() as cur:
            rows = cur.all(f"SELECT {', '.join(self._COLUMNS)} FROM submissions {where} "
                           "ORDER BY received_at DESC LIMIT ?", args)
        return [dict(zip(self._COLUMNS, r)) for r in rows]

    def submission(self, submission_id: str) -> dict | None:
        with self._tx() as cur:
            row = cur.one(f"SELECT {', '.join(self._COLUMNS)}, document FROM submissions WHERE submission_id = ?",
                          (submission_id,))
        return dict(zip(self._COLUMNS + ("document",), row)) if row else None

    def count(self) -> int:
        with self._tx() as cur:
            return cur.one("SELECT COUNT(*) FROM submissions", ())[0]


class _SqliteCursor:
    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, args=()) -> int:
        return self.conn.execute(sql, args).rowcount

    def one(self, sql, args):
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql, args):
        return self.conn.execute(sql, args).fetchall()


class _PgCursor:
    def __init__(self, cur):
        self.cur = cur

    def execute(self, sql, args=()) -> int:
        self.cur.execute(sql.replace("?", "%s"), args)
        return self.cur.rowcount

    def one(self, sql, args):
        self.cur.execute(sql.replace("?", "%s"), args)
        return self.cur.fetchone()

    def all(self, sql, args):
        self.cur.execute(sql.replace("?", "%s"), args)
        return self.cur.fetchall()


def _days_before(yymmdd: str, days: int) -> str:
    return (datetime.strptime(yymmdd, "%y%m%d") - timedelta(days=days)).strftime("%y%m%d")


def open_store(database: str, **kwargs) -> SqlCentralStore:
    """A store for a SQLite file path, or for a ``postgresql://`` URL (needs the psycopg package)."""
    if re.match(r"postgres(ql)?://", database):
        import psycopg  # only a province's central needs it

        return SqlCentralStore(lambda: psycopg.connect(database), "postgres", **kwargs)
    Path(database).parent.mkdir(parents=True, exist_ok=True)

    def connect():
        conn = sqlite3.connect(database, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    return SqlCentralStore(connect, "sqlite", **kwargs)


class BlobStore:
    """Content-addressed files, uploaded in chunks that may stop and resume: ``blobs/ab/abcd...`` when
    complete, ``partial/abcd...`` while arriving."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "partial").mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _final(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def _partial(self, sha256: str) -> Path:
        return self.root / "partial" / sha256

    def lock(self, sha256: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sha256, threading.Lock())

    def exists(self, sha256: str) -> bool:
        return self._final(sha256).exists()

    def offset(self, sha256: str) -> int:
        """How many bytes of an unfinished upload the central already has."""
        try:
            return self._partial(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, sha256: str, start: int, data: bytes, total: int) -> str:
        """Add one chunk; returns 'complete', 'partial', 'offset_mismatch' or 'hash_mismatch'."""
        with self.lock(sha256):
            if self.exists(sha256):
                return "complete"
            if start != self.offset(sha256) or start + len(data) > total:
                return "offset_mismatch"
            partial = self._partial(sha256)
            with open(partial, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if start + len(data) < total:
                return "partial"
            digest = hashlib.sha256()
            with open(partial, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != sha256:
                partial.unlink()
                return "hash_mismatch"
            final = self._final(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
            return "complete"

    def read(self, sha256: str) -> bytes:
        return self._final(sha256).read_bytes()
