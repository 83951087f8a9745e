"""Where the reference central keeps stations, submissions and status changes.

``CentralStore`` is the small interface the central's routes use; ``SqlCentralStore`` implements it once
in SQL that both SQLite (the default, one file) and PostgreSQL (a province, via psycopg) accept, with
only the placeholder style differing; the tables are made and changed by sync/central_migrations.py at
start. Blobs live in a ``BlobStore`` folder.
"""
import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiosk.core import ratings as ratings_mod
from kiosk.core.keyfile import fsync_folder, write_durably

from .central_migrations import migrate
from .notify import document_contacts


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


class DocumentKeyError(RuntimeError):
    """The documents key is missing or is not the one this database's documents were sealed with."""


# A dossier document at rest: "sealed:v1:" + base64(nonce(12) + AES-256-GCM ciphertext and tag), the
# submission id as associated data (a sealed document copied onto another row does not open). The key is
# central-documents.key in the data folder, never in the database (docs/sync.md, "Documents at rest").
SEALED_PREFIX = "sealed:v1:"


def document_key_id(key: bytes) -> str:
    """A name for the documents key, kept in store_meta: a central started with another key refuses."""
    return hashlib.sha256(b"dvc-central-documents-key\n" + key).hexdigest()[:16]


def seal_document(key: bytes, submission_id: str, document_json: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(key).encrypt(nonce, document_json.encode(), submission_id.encode())
    return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()


def open_document(key: bytes, submission_id: str, stored: str) -> str:
    """The document JSON of a sealed column value; DocumentKeyError when it does not open with ``key``."""
    if not stored.startswith(SEALED_PREFIX):
        raise DocumentKeyError(f"submission {submission_id}: the document is not sealed")
    raw = base64.b64decode(stored[len(SEALED_PREFIX):])
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], submission_id.encode()).decode()
    except InvalidTag:
        raise DocumentKeyError(f"submission {submission_id}: the document does not open with this key") from None


def attachment_hashes(document_json: str | None) -> list[str]:
    """The sha256 of every blob a dossier document names under ``attachments`` (checked on receipt)."""
    if not document_json:
        return []
    attachments = json.loads(document_json).get("attachments") or []
    return [a["sha256"] for a in attachments if isinstance(a, dict) and SHA256_NAME.fullmatch(str(a.get("sha256")))]


class CentralStore(Protocol):
    def station(self, station_id: str) -> Station | None: ...
    def enrol(self, station_id: str, public_key: str, name: str = "") -> Station: ...
    def revoke(self, station_id: str) -> bool: ...
    def receive(self, station_id: str, submission_id: str, payload_sha256: str, document_json: str,
                tracking_code: str, procedure_code: str, prior: Prior | None = None) -> Receipt: ...
    def identity(self) -> dict: ...
    def mark_restored(self, at_least: int = 0) -> dict: ...
    def head(self, station_id: str) -> int: ...
    def station_heads(self) -> list[tuple[str, int]]: ...
    def stations(self) -> list[Station]: ...
    def holds(self, station_id: str, submission_ids: list[str]) -> dict: ...
    def set_status(self, submission_id: str, status: str, actor: str) -> bool: ...
    def purge_documents(self, handed_over_before: str, received_before: str) -> int: ...
    def drop_documents(self, handed_over_before: str, received_before: str) -> dict[str, list[str]]: ...
    def named_blobs(self, candidates: set[str]) -> set[str]: ...
    def changes(self, station_id: str, since: int, limit: int = 500) -> list[dict]: ...
    def submissions(self, status: str | None = None, limit: int = 200) -> list[dict]: ...
    def submission(self, submission_id: str) -> dict | None: ...
    def count(self) -> int: ...
    def receive_ratings(self, station_id: str, documents: list[dict]) -> tuple[list[str], dict[str, str]]: ...
    def rating_summary(self, first_day: str, last_day: str, station_id: str | None = None,
                       procedure_code: str | None = None) -> dict: ...


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
                 timezone_name: str = "Asia/Ho_Chi_Minh", watermark: Path | None = None,
                 document_key: bytes | None = None):
        self._connect, self.dialect = connect, dialect
        # Without the documents key (a backup reading the store's facts, the migration tests) the store
        # neither receives nor reads documents.
        self.document_key = document_key
        self.agency_code, self.zone = agency_code, ZoneInfo(timezone_name)
        self._local = threading.local()
        self.watermark = Path(watermark) if watermark else None
        self._reserved: dict[str, int] = {}
        self._watermark_lock = threading.Lock()
        # The channels this central notifies citizens through (sync/notify.py): a status change queues a
        # row for each of them the dossier's document consents to; none set, nothing is queued.
        # ``on_queued`` (the sender's wake-up) is called after a transaction that queued one.
        self.notify_channels: frozenset[str] = frozenset()
        self.on_queued = None
        # The shared board of station heads (sync/feed.py), attached by open_central: every change raises
        # its station's slot before it commits, enrolment and revocation bump its stations generation, and
        # mark_restored writes the new identity, so no central process answers an idle pull from stale memory.
        self.feed = None
        # The schema, and the store's identity (made once, with the database): sync/central_migrations.py.
        migrate(self._conn(), dialect)
        self.sealed_at_start = self._seal_plain_documents() if document_key is not None else 0
        self._identity = self._read_identity()
        self.restored_at_start = self._apply_watermark()

    # -- documents at rest ------------------------------------------------------------------------------
    def _seal_plain_documents(self) -> int:
        """At start, with the key: check it is this database's documents key (recorded the first time), and
        seal every document still in plain text (written before documents were sealed, or put back from
        such a backup), in one transaction. Idempotent: a sealed one starts with SEALED_PREFIX. Returns
        how many were sealed; SQLite's old pages are then zeroed (secure_delete) and its WAL emptied."""
        key, wanted = self.document_key, document_key_id(self.document_key)
        if len(key) != 32:
            raise DocumentKeyError("the documents key must be 32 bytes")
        with self._tx() as cur:
            cur.execute("INSERT INTO store_meta (name, value) VALUES ('document_key_id', ?) "
                        "ON CONFLICT (name) DO NOTHING", (wanted,))
            (recorded,) = cur.one("SELECT value FROM store_meta WHERE name = 'document_key_id'", ())
            if recorded != wanted:
                raise DocumentKeyError(
                    "central-documents.key is not the key this database's documents were sealed with: put the "
                    "right one back (it is in the central's backups), the central cannot start")
            plain = cur.all("SELECT submission_id, document FROM submissions WHERE document_purged_at IS NULL "
                            "AND document <> '' AND document NOT LIKE ?", (SEALED_PREFIX.split(":")[0] + ":%",))
            for submission_id, document in plain:
                # "AND document = ?": a second central sealing at the same time (PostgreSQL) changes nothing.
                cur.execute("UPDATE submissions SET document = ? WHERE submission_id = ? AND document = ?",
                            (seal_document(key, submission_id, document), submission_id, document))
        if plain:
            self._forget_old_pages()
        return len(plain)

    def _forget_old_pages(self) -> None:
        """SQLite: move the WAL into the main file and truncate it, so the old versions of the rows changed
        (zeroed by secure_delete in the pages) are in no file. PostgreSQL keeps old row versions until
        VACUUM (docs/sync.md)."""
        if self.dialect == "sqlite":
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _open(self, submission_id: str, stored: str | None) -> str | None:
        """The document JSON as received; None once purged or when the store has no key."""
        if not stored or self.document_key is None:
            return None
        return open_document(self.document_key, submission_id, stored)

    def purge_documents(self, handed_over_before: str, received_before: str) -> int:
        """Drop the document of every dossier handed over (its status left 'received') before
        ``handed_over_before`` and received before ``received_before`` (UTC ISO times); the row, its hash,
        codes and status stay. Returns how many were dropped."""
        return len(self.drop_documents(handed_over_before, received_before))

    def drop_documents(self, handed_over_before: str, received_before: str) -> dict[str, list[str]]:
        """``purge_documents``, in one transaction, returning {submission_id: the blobs its document named}
        for each document dropped, so the caller can drop the blobs no held document names any more. A row
        another central purged meanwhile (PostgreSQL) is not counted twice."""
        dropped: dict[str, list[str]] = {}
        with self._tx() as cur:
            rows = cur.all("SELECT submission_id, document FROM submissions WHERE document_purged_at IS NULL "
                           "AND handed_over_at IS NOT NULL AND handed_over_at <= ? AND received_at <= ?",
                           (handed_over_before, received_before))
            at = now_iso()
            for submission_id, document in rows:
                if cur.execute("UPDATE submissions SET document = '', document_purged_at = ? "
                               "WHERE submission_id = ? AND document_purged_at IS NULL", (at, submission_id)):
                    dropped[submission_id] = attachment_hashes(self._open(submission_id, document))
                    # The address went with the document: what was still to tell cannot be told.
                    cur.execute("UPDATE notifications SET state = 'dropped', last_error = 'document dropped' "
                                "WHERE submission_id = ? AND state = 'pending'", (submission_id,))
        if dropped:
            self._forget_old_pages()
        return dropped

    def named_blobs(self, candidates: set[str]) -> set[str]:
        """Those of ``candidates`` (sha256) that a document still held names. The documents are sealed, so
        each held one is opened (hourly, and only when a purge dropped documents that named blobs). Without
        the key every candidate counts as named: nothing is dropped that might be needed."""
        if not candidates or self.document_key is None:
            return set(candidates)
        with self._tx() as cur:
            rows = cur.all("SELECT submission_id, document FROM submissions WHERE document_purged_at IS NULL "
                           "AND document <> ''", ())
        named: set[str] = set()
        for submission_id, document in rows:
            named.update(sha for sha in attachment_hashes(self._open(submission_id, document)) if sha in candidates)
            if named == candidates:
                break
        return named

    # -- staff accounts of the staff page (the central decides; this only reads and writes the rows) -----
    _STAFF = ("username", "secret_hash", "failed_logins", "locked_until", "active", "created_at", "last_login_at")

    def staff_add(self, username: str, secret_hash: str) -> bool:
        """Add an account; False when the user name is taken."""
        with self._tx() as cur:
            return cur.execute("INSERT INTO central_staff (username, secret_hash, created_at) VALUES (?, ?, ?) "
                               "ON CONFLICT (username) DO NOTHING", (username, secret_hash, now_iso())) > 0

    def staff_account(self, username: str) -> dict | None:
        with self._tx() as cur:
            row = cur.one(f"SELECT {', '.join(self._STAFF)} FROM central_staff WHERE username = ?", (username,))
        return dict(zip(self._STAFF, row)) if row else None

    def staff_accounts(self) -> list[dict]:
        with self._tx() as cur:
            rows = cur.all(f"SELECT {', '.join(self._STAFF)} FROM central_staff ORDER BY username", ())
        return [{k: v for k, v in zip(self._STAFF, r) if k != "secret_hash"} for r in rows]

    def staff_set_active(self, username: str, active: bool) -> bool:
        with self._tx() as cur:
            return cur.execute("UPDATE central_staff SET active = ? WHERE username = ?",
                               (int(active), username)) > 0

    def staff_unlock(self, username: str) -> bool:
        """End a lock after wrong passwords (an operator who has checked who is asking)."""
        with self._tx() as cur:
            return cur.execute("UPDATE central_staff SET failed_logins = 0, locked_until = NULL WHERE username = ?",
                               (username,)) > 0

    def _staff_row_locked(self, cur, username: str):
        """(failed_logins, locked_until, active) of the account, its row locked for this transaction (SQLite:
        the whole database is, by BEGIN IMMEDIATE)."""
        lock = " FOR UPDATE" if self.dialect == "postgres" else ""
        return cur.one(f"SELECT failed_logins, locked_until, active FROM central_staff WHERE username = ?{lock}",
                       (username,))

    def staff_failed(self, username: str, now: datetime, max_failures: int, lockout: timedelta) -> str | None:
        """Count a wrong password, read and written in one transaction under the row's lock, so wrong
        passwords checked at the same time are each counted; the ``max_failures``-th locks the account for
        ``lockout``. A failure that finds the account locked meanwhile is not counted. Returns the
        locked_until in force, or None."""
        with self._tx() as cur:
            row = self._staff_row_locked(cur, username)
            if row is None:
                return None
            failed, locked = row[0], row[1]
            if locked and datetime.fromisoformat(locked) > now:
                return locked
            failures = failed + 1
            until = (now + lockout).isoformat(timespec="milliseconds") if failures >= max_failures else None
            cur.execute("UPDATE central_staff SET failed_logins = ?, locked_until = ? WHERE username = ?",
                        (0 if until else failures, until, username))
            return until

    def staff_succeeded(self, username: str, now: datetime, new_hash: str | None = None) -> bool:
        """Record a right password: False (nothing changed) when the account was locked or deactivated
        meanwhile, else the count is reset."""
        with self._tx() as cur:
            row = self._staff_row_locked(cur, username)
            if row is None or not row[2] or (row[1] and datetime.fromisoformat(row[1]) > now):
                return False
            cur.execute("UPDATE central_staff SET failed_logins = 0, locked_until = NULL, last_login_at = ?, "
                        "secret_hash = COALESCE(?, secret_hash) WHERE username = ?",
                        (now.isoformat(timespec="milliseconds"), new_hash, username))
            return True

    # -- who this store is, and the code watermark ------------------------------------------------------
    def _read_identity(self) -> dict:
        with self._tx() as cur:
            meta = dict(cur.all("SELECT name, value FROM store_meta", ()))
        return {"store_id": meta["store_id"], "generation": int(meta["generation"])}

    def identity(self) -> dict:
        """{"store_id", "generation"}, as the central tells stations: read at start, changed only by
        mark_restored (a restore is done with the central stopped; store_meta.restored_at says when)."""
        return dict(self._identity)

    def reload_identity(self) -> dict:
        """The identity read again from the database: another process marked it restored while this one ran
        (the feed board tells, sync/feed.py)."""
        self._identity = self._read_identity()
        return self.identity()

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
        if self.feed is not None:
            self.feed.set_identity(self._identity)
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

    def stations(self) -> list[Station]:
        """Every enrolled station (revoked ones too), in one read: the feed's key cache is filled from it."""
        with self._tx() as cur:
            rows = cur.all("SELECT station_id, public_key, name, enrolled_at, revoked_at FROM stations", ())
        return [Station(*row) for row in rows]

    def enrol(self, station_id: str, public_key: str, name: str = "") -> Station:
        """Enrol (or re-key and un-revoke) a station."""
        with self._tx() as cur:
            cur.execute("INSERT INTO stations (station_id, public_key, name, enrolled_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (station_id) DO UPDATE SET public_key = excluded.public_key, "
                        "name = excluded.name, enrolled_at = excluded.enrolled_at, revoked_at = NULL",
                        (station_id, public_key, name, now_iso()))
            (last_change,) = cur.one("SELECT last_change FROM stations WHERE station_id = ?", (station_id,))
        if self.feed is not None:  # after the commit: a process reading the key again reads the new one
            self.feed.raise_head(station_id, int(last_change))  # a slot from the start: idle pulls answered
            self.feed.stations_changed()
        return self.station(station_id)

    def revoke(self, station_id: str) -> bool:
        with self._tx() as cur:
            revoked = cur.execute("UPDATE stations SET revoked_at = ? WHERE station_id = ? AND revoked_at IS NULL",
                                  (now_iso(), station_id)) > 0
        if self.feed is not None:  # after the commit: every process reads the station again on its next request
            self.feed.stations_changed()
        return revoked

    def station_heads(self) -> list[tuple[str, int]]:
        """(station_id, last_change) of every station, read without taking SQLite's write lock (the feed
        board is rebuilt from it while writers may wait on the board's lock)."""
        conn = self._conn()
        if self.dialect == "sqlite":
            return [(r[0], int(r[1])) for r in conn.execute("SELECT station_id, last_change FROM stations")]
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT station_id, last_change FROM stations")
                rows = [(r[0], int(r[1])) for r in cur.fetchall()]
        finally:
            conn.rollback()  # end the read's implicit transaction
        return rows

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

    def _record_change(self, cur, station_id: str, submission_id: str, status: str, at: str, actor: str,
                       document_json: str | None = None) -> int:
        """Record a status change (and queue its notifications, for the channels the dossier's document
        consents to, in the same transaction: a change is told once, never lost); returns how many were
        queued."""
        # The per-station sequence is taken under the station row's lock, so changes commit in seq order
        # and a reader of ``since=N`` never skips one that commits later with a smaller number.
        (seq,) = cur.one("UPDATE stations SET last_change = last_change + 1 WHERE station_id = ? "
                         "RETURNING last_change", (station_id,))
        if self.feed is not None:
            # Raised before the commit: a reader may see the slot ahead of the database (it reads the
            # database then), never behind it. A rollback leaves it ahead: an extra read, nothing missed.
            self.feed.raise_head(station_id, seq)
        cur.execute("INSERT INTO changes (station_id, seq, submission_id, status, at, actor) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (station_id, seq, submission_id, status, at, actor))
        queued = 0
        if self.notify_channels and document_json:
            for channel in sorted(set(document_contacts(document_json)) & self.notify_channels):
                queued += cur.execute(
                    "INSERT INTO notifications (station_id, seq, channel, submission_id, status, next_attempt_at, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station_id, seq, channel) DO NOTHING",
                    (station_id, seq, channel, submission_id, status, at, at))
        return queued

    def _queued(self, count: int) -> None:
        if count and self.on_queued is not None:
            self.on_queued()

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
            if self.document_key is None:
                raise DocumentKeyError("this store was opened without the documents key: it cannot receive")
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
                (submission_id, station_id, payload_sha256, code, tracking_code, procedure_code,
                 seal_document(self.document_key, submission_id, document_json), at, "received", at))
            if inserted:
                # A dossier sent again after a restore (with its earlier acknowledgement) was told of already.
                queued = self._record_change(cur, station_id, submission_id, "received", at, "central",
                                             document_json if prior is None else None)
                receipt = Receipt(submission_id, station_id, payload_sha256, code, at, created=True)
        if inserted:
            self._queued(queued)
            return receipt
        # Lost a race with a concurrent first receipt (PostgreSQL, READ COMMITTED): read the winner's.
        with self._tx() as cur:
            return self._existing(cur, submission_id, station_id, payload_sha256)

    def set_status(self, submission_id: str, status: str, actor: str) -> bool:
        with self._tx() as cur:
            row = cur.one("SELECT station_id, status, document FROM submissions WHERE submission_id = ?",
                          (submission_id,))
            if row is None or row[1] == status:
                return False
            at = now_iso()
            # The first change away from 'received' hands the dossier over to the processing system: its
            # document is dropped the retention after that (purge_documents).
            cur.execute("UPDATE submissions SET status = ?, status_at = ?, handed_over_at = "
                        "COALESCE(handed_over_at, ?) WHERE submission_id = ?",
                        (status, at, at if status != "received" else None, submission_id))
            document = self._open(submission_id, row[2]) if self.notify_channels else None
            queued = self._record_change(cur, row[0], submission_id, status, at, actor, document)
        self._queued(queued)
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
                "status", "status_at", "payload_sha256", "handed_over_at", "document_purged_at")

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
        if row is None:
            return None
        found = dict(zip(self._COLUMNS + ("document",), row))
        found["document"] = self._open(submission_id, found["document"])
        return found

    def count(self) -> int:
        with self._tx() as cur:
            return cur.one("SELECT COUNT(*) FROM submissions", ())[0]

    # -- tracking at any station ------------------------------------------------------------------------
    def tracked(self, tracking_code: str) -> dict | None:
        """What any station may tell a citizen about the dossier with this tracking code (dashes and case
        ignored): codes, procedure, times, status and the station that took it; never the document."""
        compact = re.sub(r"[^0-9A-Z]", "", tracking_code.upper())
        with self._tx() as cur:
            row = cur.one("SELECT s.tracking_code, s.status, s.central_code, s.received_at, s.procedure_code, "
                          "s.status_at, s.station_id, st.name FROM submissions s "
                          "JOIN stations st ON st.station_id = s.station_id "
                          "WHERE replace(s.tracking_code, '-', '') = ? ORDER BY s.received_at DESC LIMIT 1",
                          (compact,))
        if row is None:
            return None
        return dict(zip(("tracking_code", "status", "central_code", "received_at", "procedure_code", "status_at",
                         "station_id", "station_name"), row))

    # -- satisfaction ratings (kiosk/core/ratings.py, docs/ratings.md) -----------------------------------
    def receive_ratings(self, station_id: str, documents: list[dict]) -> tuple[list[str], dict[str, str]]:
        """Keep each rating once, in one transaction: (ids held now, {id: why refused}). A rating sent again
        with the same bytes is held already (a station that lost our answer sends it again); the same id with
        other bytes, or another station's, is refused. ``documents`` are checked (ratings.problem) already."""
        held, refused = [], {}
        with self._tx() as cur:
            for doc in documents:
                digest = hashlib.sha256(ratings_mod.canonical(doc)).hexdigest()
                rating_id = doc["rating_id"]
                inserted = cur.execute(
                    "INSERT INTO received_ratings (rating_id, station_id, local_day, moment, channel, procedure_code, "
                    "content_sha256) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rating_id) DO NOTHING",
                    (rating_id, station_id, doc["local_day"], doc["moment"], doc["channel"],
                     doc["procedure_code"] or "", digest))
                if inserted:
                    for criterion, level in sorted(doc["answers"].items()):
                        cur.execute("INSERT INTO received_rating_answers (rating_id, criterion, level) VALUES (?, ?, ?)",
                                    (rating_id, criterion, level))
                    held.append(rating_id)
                    continue
                row = cur.one("SELECT station_id, content_sha256 FROM received_ratings WHERE rating_id = ?", (rating_id,))
                if row is not None and (row[0], row[1]) == (station_id, digest):
                    held.append(rating_id)
                else:
                    refused[rating_id] = "conflict: this rating id was used for another rating"
        return held, refused

    def rating_summary(self, first_day: str, last_day: str, station_id: str | None = None,
                       procedure_code: str | None = None) -> dict:
        """The ratings of local days ``first_day``..``last_day`` (YYYY-MM-DD), optionally of one station or
        procedure: the whole (ratings.tally's shape) and the same per station and per procedure, counted in
        SQL (a province has many)."""
        where, args = "r.local_day BETWEEN ? AND ?", [first_day, last_day]
        if station_id:
            where, args = where + " AND r.station_id = ?", args + [station_id]
        if procedure_code is not None:
            where, args = where + " AND r.procedure_code = ?", args + [procedure_code]
        # Grouped by the column's position: PostgreSQL refuses a constant in GROUP BY, both accept "1".
        groups = {"all": "r.moment", "station": "r.station_id", "procedure": "r.procedure_code"}
        found: dict[str, dict] = {name: {} for name in groups}
        with self._tx() as cur:
            for name, column in groups.items():
                for key, moment, number in cur.all(
                        f"SELECT {column}, r.moment, COUNT(*) FROM received_ratings r WHERE {where} GROUP BY 1, 2",
                        tuple(args)):
                    key = "" if name == "all" else key
                    entry = found[name].setdefault(key, {"total": 0, "by_moment": {}, "counts": {}})
                    entry["total"] += number
                    entry["by_moment"][moment] = number
                keyed = (f"{column}, a.criterion, a.level", "1, 2, 3") if name != "all" else \
                    ("a.criterion, a.level", "1, 2")
                for *key, criterion, level, number in cur.all(
                        f"SELECT {keyed[0]}, COUNT(*) FROM received_ratings r JOIN received_rating_answers a "
                        f"ON a.rating_id = r.rating_id WHERE {where} GROUP BY {keyed[1]}", tuple(args)):
                    entry = found[name][key[0] if key else ""]
                    counts = entry["counts"].setdefault(criterion, {})
                    counts[int(level)] = counts.get(int(level), 0) + number

        def tallied(entry):
            return ratings_mod.tally(entry["total"], entry["by_moment"], entry["counts"])

        whole = found["all"].get("")
        return {"first_day": first_day, "last_day": last_day,
                "all": tallied(whole) if whole else ratings_mod.tally(0, {}, {}),
                "by_station": {k: tallied(v) for k, v in sorted(found["station"].items())},
                "by_procedure": {k: tallied(v) for k, v in sorted(found["procedure"].items())}}

    def rating_stations(self) -> list[str]:
        """The stations that sent ratings, for the summary page's choice."""
        with self._tx() as cur:
            return [r[0] for r in cur.all("SELECT DISTINCT station_id FROM received_ratings ORDER BY station_id", ())]

    # -- notifications (sync/notify.py sends them; the rows say what is due) ----------------------------
    _NOTIFICATION = ("station_id", "seq", "channel", "submission_id", "status", "state", "attempts",
                     "next_attempt_at", "created_at", "sent_at", "last_error")

    def due_notifications(self, now: str, limit: int = 100) -> list[dict]:
        """Pending rows due at ``now`` and not claimed by a sender, in the order of the changes, with the
        tracking code; a row waits while an earlier one of its dossier and channel is pending, so a citizen
        never hears "done" before "received"."""
        with self._tx() as cur:
            rows = cur.all("SELECT n.station_id, n.seq, n.channel, n.submission_id, n.status, n.attempts, "
                           "s.tracking_code FROM notifications n JOIN submissions s ON s.submission_id = n.submission_id "
                           "WHERE n.state = 'pending' AND n.next_attempt_at <= ? "
                           "AND (n.claimed_until IS NULL OR n.claimed_until <= ?) "
                           "AND NOT EXISTS (SELECT 1 FROM notifications e WHERE e.submission_id = n.submission_id "
                           "AND e.channel = n.channel AND e.state = 'pending' AND e.seq < n.seq) "
                           "ORDER BY n.station_id, n.seq LIMIT ?", (now, now, limit))
        return [dict(zip(("station_id", "seq", "channel", "submission_id", "status", "attempts", "tracking_code"), r))
                for r in rows]

    def claim_notification(self, key: tuple, now: str, until: str) -> bool:
        """Take a pending row for sending until ``until``; False when another sender holds it or it is done."""
        with self._tx() as cur:
            return cur.execute("UPDATE notifications SET claimed_until = ? WHERE station_id = ? AND seq = ? "
                               "AND channel = ? AND state = 'pending' AND (claimed_until IS NULL OR claimed_until <= ?)",
                               (until, *key, now)) > 0

    def notification_sent(self, key: tuple, at: str) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE notifications SET state = 'sent', sent_at = ?, claimed_until = NULL, "
                        "attempts = attempts + 1, last_error = NULL "
                        "WHERE station_id = ? AND seq = ? AND channel = ?", (at, *key))

    def notification_retry(self, key: tuple, attempts: int, next_attempt_at: str, error: str) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE notifications SET attempts = ?, next_attempt_at = ?, last_error = ?, "
                        "claimed_until = NULL WHERE station_id = ? AND seq = ? AND channel = ? AND state = 'pending'",
                        (attempts, next_attempt_at, error[:300], *key))

    def notification_given_up(self, key: tuple, state: str, error: str, attempts: int | None = None) -> None:
        """``failed`` (tried too often) or ``dropped`` (nothing to send it with, or to)."""
        with self._tx() as cur:
            cur.execute("UPDATE notifications SET state = ?, last_error = ?, claimed_until = NULL, "
                        "attempts = COALESCE(?, attempts) WHERE station_id = ? AND seq = ? AND channel = ?",
                        (state, error[:300], attempts, *key))

    def notification_contacts(self, submission_id: str) -> dict[str, str]:
        """{channel: address} the dossier's sealed document consents to; empty once it was dropped."""
        with self._tx() as cur:
            row = cur.one("SELECT document FROM submissions WHERE submission_id = ?", (submission_id,))
        return document_contacts(self._open(submission_id, row[0])) if row else {}

    def notifications(self, submission_id: str | None = None) -> list[dict]:
        """The queue's rows (of one submission), for staff and tests: no addresses are kept in it."""
        where, args = ("WHERE submission_id = ?", (submission_id,)) if submission_id else ("", ())
        with self._tx() as cur:
            rows = cur.all(f"SELECT {', '.join(self._NOTIFICATION)} FROM notifications {where} "
                           "ORDER BY station_id, seq, channel", args)
        return [dict(zip(self._NOTIFICATION, r)) for r in rows]


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


def owner_only(database: str) -> None:
    """Make the SQLite file readable by its owner only before SQLite opens it: SQLite gives its -wal and
    -shm files the main file's mode. Files made earlier with a wider mode are narrowed."""
    path = Path(database)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = name.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(name, mode & 0o700)


def open_store(database: str, **kwargs) -> SqlCentralStore:
    """A store for a SQLite file path, or for a ``postgresql://`` URL (needs the psycopg package)."""
    if re.match(r"postgres(ql)?://", database):
        import psycopg  # only a province's central needs it

        return SqlCentralStore(lambda: psycopg.connect(database), "postgres", **kwargs)
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    owner_only(database)

    def connect():
        conn = sqlite3.connect(database, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")  # a dropped or resealed document leaves zeros, not its bytes
        return conn

    return SqlCentralStore(connect, "sqlite", **kwargs)


BLOB_MAX_BYTES = 25 << 20          # one blob (a scanned document, a photo), as declared by its first chunk
BLOB_QUOTA_BYTES = 2 << 30         # per station: the blobs it owns plus its unfinished uploads (declared totals)
BLOB_PARTIAL_TTL_S = 48 * 3600     # an unfinished upload no byte was added to for this long is removed
BLOB_MAX_UPLOADS = 32              # unfinished uploads one station may have at once
BLOB_SWEEP_INTERVAL_S = 600        # how often a blob request sweeps every station's expired uploads
BLOB_BLOCK = 4096                  # every blob and upload counts at least one disk block against a quota
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A complete blob at rest: BLOB_SEALED_MAGIC + nonce(12) + AES-256-GCM ciphertext and tag, under a key derived
# from central-documents.key (HKDF-SHA256, BLOB_KEY_INFO), with "dvc-central-blob/1\n<sha256>" as associated
# data: a sealed blob renamed to another sha256 does not open. The file keeps the plaintext's sha256 as name.
BLOB_SEALED_MAGIC = b"DVCBLOB1"
BLOB_KEY_INFO = b"dvc-central-blobs/1"
BLOB_OVERHEAD = len(BLOB_SEALED_MAGIC) + 12 + 16
log = logging.getLogger("sync.central")


class ProcessLock:
    """A lock that holds between the threads of a process and between processes (the workers of ``kiosk
    central serve --workers N`` share one blob folder): a thread lock, then ``flock`` on a file opened for
    this acquisition (a descriptor of its own, so a fork never shares it). The OS frees it when the holder
    dies, even by SIGKILL. Not re-entrant."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._thread = threading.Lock()
        self._fd: int | None = None

    def __enter__(self):
        self._thread.acquire()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            self._thread.release()
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc):
        fd, self._fd = self._fd, None
        os.close(fd)  # releases the flock
        self._thread.release()


class NamingLock:
    """Shared for receipts checking the blobs their document names (``with lock.shared():``), exclusive for
    the retention deciding which blobs no held document names (``with lock.exclusive():``), between threads
    and processes: an flock on a file opened for each acquisition (two descriptors of one process conflict
    like those of two processes), so receipts run side by side and wait only for a purge."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _held(self, mode: int):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield self
        finally:
            os.close(fd)  # releases the flock

    def shared(self):
        return self._held(fcntl.LOCK_SH)

    def exclusive(self):
        return self._held(fcntl.LOCK_EX)


class BlobDamaged(Exception):
    """A stored blob does not open with the key, or its bytes do not hash to its name."""


def blob_key(documents_key: bytes) -> bytes:
    """The key complete blobs are sealed with, derived from the documents key (one key file to keep)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=BLOB_KEY_INFO).derive(documents_key)


def _blob_aad(sha256: str) -> bytes:
    return b"dvc-central-blob/1\n" + sha256.encode()


class BlobStore:
    """Content-addressed files, uploaded in chunks that may stop and resume, in one folder (no database):

    - ``blobs/ab/<sha256>``: a complete blob, stored once whoever sent it (content-addressed, so shared);
    - ``owners/<station>/<sha256>.<size>``: an empty file for each station that uploaded it. A blob two
      stations both uploaded is owned by both, and counts in full against each one's quota; a station
      that finds it there (HEAD 200) sends nothing and owns nothing;
    - ``partial/<station>/<sha256>.<total>``: one station's unfinished upload, the total it declared in the
      name. Each station has its own: another station never sees its offset, appends to it or completes
      it (its chunks go to its own upload, which starts at 0), and cannot block it.

    Complete blobs are sealed at rest (``BLOB_SEALED_MAGIC``, AES-256-GCM under ``blob_key(documents_key)``,
    bound to the sha256); ``read`` opens them and checks the hash; blobs written before sealing (plain) are
    still read, and sealed by ``seal_plain`` (at start). Unfinished uploads are plain until complete: the
    station's chunks are appended as they come, and expire after ``partial_ttl``.

    Limits: a blob at most ``max_bytes``; per station, its blobs and unfinished uploads (at their declared
    totals, so an upload cannot grow past what was allowed when it started) at most ``quota_bytes``, and
    at most ``max_uploads`` unfinished at once; an unfinished upload no byte was added to for
    ``partial_ttl`` seconds is removed, by ``sweep`` (at start, every ``sweep_interval`` seconds from a
    blob request, and each station's own on its every request).
    """

    def __init__(self, root: Path, *, documents_key: bytes | None = None, max_bytes: int = BLOB_MAX_BYTES,
                 quota_bytes: int = BLOB_QUOTA_BYTES, partial_ttl: float = BLOB_PARTIAL_TTL_S,
                 max_uploads: int = BLOB_MAX_UPLOADS, sweep_interval: float = BLOB_SWEEP_INTERVAL_S):
        self.root = Path(root)
        # Without the key (a tool that only counts) blobs are read when plain and never completed.
        self._aead = AESGCM(blob_key(documents_key)) if documents_key is not None else None
        (self.root / "partial").mkdir(parents=True, exist_ok=True)
        # Several central processes (``kiosk central serve --workers N``) share this folder: each lock is a
        # thread lock and an flock on a file in locks/, so it holds between threads and between processes.
        locks = self.root / "locks"
        locks.mkdir(exist_ok=True)
        self._locks = tuple(ProcessLock(locks / f"{i:02d}.lock") for i in range(64))  # by sha256, a fixed set
        # A new upload's quota check and creation, one at a time.
        self._start_lock = ProcessLock(locks / "start.lock")
        # Shared by receipts that check the blobs they name, exclusive for the retention dropping blobs no
        # held document names (Central.purge): a blob is never dropped under a receipt in any process.
        self.naming = NamingLock(locks / "naming.lock")
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0  # the first blob request sweeps (``configure`` does it at start)
        self.max_bytes, self.quota_bytes, self.partial_ttl = max_bytes, quota_bytes, partial_ttl
        self.max_uploads, self.sweep_interval = max_uploads, sweep_interval

    def configure(self, *, max_bytes: int | None = None, quota_bytes: int | None = None,
                  partial_ttl: float | None = None, max_uploads: int | None = None,
                  sweep_interval: float | None = None) -> int:
        """Set the limits (None keeps one) and sweep at once; returns how many expired uploads were removed."""
        if max_bytes is not None:
            self.max_bytes = int(max_bytes)
        if quota_bytes is not None:
            self.quota_bytes = int(quota_bytes)
        if partial_ttl is not None:
            self.partial_ttl = float(partial_ttl)
        if max_uploads is not None:
            self.max_uploads = int(max_uploads)
        if sweep_interval is not None:
            self.sweep_interval = float(sweep_interval)
        self._next_sweep = time.monotonic() + self.sweep_interval
        return self.sweep()

    # -- where things are -------------------------------------------------------------------------------
    @staticmethod
    def _folder_name(station_id: str) -> str:
        """A station's folder: its id when that is a safe file name, else a hash of it (never a path)."""
        if _SAFE_NAME.fullmatch(station_id):
            return station_id
        return "~" + hashlib.sha256(station_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def _final(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def _partials(self, station_id: str) -> Path:
        return self.root / "partial" / self._folder_name(station_id)

    def _owned(self, station_id: str) -> Path:
        return self.root / "owners" / self._folder_name(station_id)

    def lock(self, sha256: str) -> "ProcessLock":
        return self._locks[int(sha256[:4], 16) % len(self._locks)]

    @staticmethod
    def _names(folder: Path) -> list[tuple[str, int, str]]:
        """(sha256, number, file name) of the ``<sha256>.<number>`` files in a folder."""
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for name in names:
            sha, _, number = name.partition(".")
            if len(sha) == 64 and number.isdigit():
                found.append((sha, int(number), name))
        return found

    def _upload(self, station_id: str, sha256: str) -> tuple[Path, int] | None:
        """This station's unfinished upload of ``sha256``: (its file, the declared total), or None."""
        for sha, total, name in self._names(self._partials(station_id)):
            if sha == sha256:
                return self._partials(station_id) / name, total
        return None

    # -- what the central has -----------------------------------------------------------------------------
    def exists(self, sha256: str) -> bool:
        return self._final(sha256).exists()

    def read(self, sha256: str) -> bytes:
        """The blob's bytes, opened and checked against its name; FileNotFoundError when the central does
        not have it, BlobDamaged when it does not open or does not hash to its name."""
        raw = self._final(sha256).read_bytes()
        data = None
        if raw.startswith(BLOB_SEALED_MAGIC) and self._aead is not None:
            try:
                n = len(BLOB_SEALED_MAGIC)
                data = self._aead.decrypt(raw[n:n + 12], raw[n + 12:], _blob_aad(sha256))
            except InvalidTag:
                data = None
        if data is None:
            data = raw  # a plain blob from before sealing (or one that happens to start with the magic)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BlobDamaged(f"blob {sha256} does not open or does not match its name")
        return data

    def _seal(self, sha256: str, data: bytes) -> bytes:
        if self._aead is None:
            raise DocumentKeyError("this blob folder was opened without the documents key: it cannot store blobs")
        nonce = secrets.token_bytes(12)
        return BLOB_SEALED_MAGIC + nonce + self._aead.encrypt(nonce, data, _blob_aad(sha256))

    def _write_final(self, sha256: str, data: bytes) -> None:
        """Write a complete blob sealed, whole or not at all (temporary file, fsync, rename, fsync)."""
        final = self._final(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        sealed = self._seal(sha256, data)
        tmp = final.with_name(f".{sha256}.{secrets.token_hex(4)}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(sealed)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_folder(final.parent)

    @staticmethod
    def _plain_size(path: Path) -> int:
        """The blob's own size (what quotas count): the file's, less the seal when it is sealed."""
        with open(path, "rb") as f:
            sealed = f.read(len(BLOB_SEALED_MAGIC)) == BLOB_SEALED_MAGIC
            size = os.fstat(f.fileno()).st_size
        return size - BLOB_OVERHEAD if sealed and size >= BLOB_OVERHEAD else size

    def seal_plain(self) -> int:
        """Seal every complete blob still plain (stored before blobs were sealed, or copied back from such a
        backup); at start. A file that does not start with the magic and hashes to its name is sealed in
        place (the same name); one that does not is left and logged. Returns how many were sealed."""
        if self._aead is None:
            return 0
        sealed = 0
        for folder in _subfolders(self.root / "blobs"):
            for entry in os.scandir(folder):
                if not SHA256_NAME.fullmatch(entry.name):
                    continue
                with self.lock(entry.name):
                    path = Path(entry.path)
                    try:
                        with open(path, "rb") as f:
                            if f.read(len(BLOB_SEALED_MAGIC)) == BLOB_SEALED_MAGIC:
                                continue
                        data = path.read_bytes()
                    except FileNotFoundError:
                        continue
                    if hashlib.sha256(data).hexdigest() != entry.name:
                        log.warning("blob %s does not hash to its name: left as it is", entry.name)
                        continue
                    self._write_final(entry.name, data)
                    sealed += 1
        return sealed

    def delete(self, sha256: str) -> bool:
        """Remove a complete blob and every station's ownership of it (the retention dropped the last
        document naming it); True when it was there."""
        with self.lock(sha256):
            try:
                self._final(sha256).unlink()
                existed = True
            except FileNotFoundError:
                existed = False
            for folder in _subfolders(self.root / "owners"):
                for sha, _size_, name in self._names(folder):
                    if sha == sha256:
                        (folder / name).unlink(missing_ok=True)
        return existed

    def offset(self, sha256: str, station_id: str | None = None) -> int:
        """How many bytes of the station's unfinished upload the central already has (0 when none); without
        a station (operators, tests), the most any station has sent."""
        if station_id is not None:
            upload = self._upload(station_id, sha256)
            return _size(upload[0]) if upload else 0
        sizes = [_size(folder / name) for folder in _subfolders(self.root / "partial")
                 for sha, _total, name in self._names(folder) if sha == sha256]
        return max(sizes, default=0)

    def owners(self, sha256: str) -> list[str]:
        """The folder names of the stations that own a complete blob (their ids, when safe file names)."""
        return sorted(folder.name for folder in _subfolders(self.root / "owners")
                      if any(sha == sha256 for sha, _size_, _name in self._names(folder)))

    def usage(self, station_id: str) -> int:
        """Bytes counted against the station's quota: the blobs it owns and its unfinished uploads' totals,
        each at least one block."""
        owned = sum(max(size, BLOB_BLOCK) for _sha, size, _name in self._names(self._owned(station_id)))
        return owned + sum(max(total, BLOB_BLOCK) for _sha, total, _name in self._names(self._partials(station_id)))

    def claim(self, station_id: str, sha256: str) -> None:
        """Record the station as an owner of a complete blob (it uploaded it, or sent a chunk of it after it
        was complete); its own unfinished upload of it, if any, is dropped."""
        with self.lock(sha256):
            self._claim(station_id, sha256)

    def _claim(self, station_id: str, sha256: str) -> None:
        upload = self._upload(station_id, sha256)
        if upload:
            upload[0].unlink(missing_ok=True)
        try:
            size = self._plain_size(self._final(sha256))
        except FileNotFoundError:
            return
        folder = self._owned(station_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{sha256}.{size}").touch()

    # -- uploads --------------------------------------------------------------------------------------------
    def append(self, station_id: str, sha256: str, start: int, data: bytes, total: int) -> str:
        """Add one chunk of the station's own upload. Returns 'complete', 'partial', 'offset_mismatch'
        (resume from ``offset``), 'total_mismatch' (another total than the upload was started with),
        'hash_mismatch' (the whole did not hash to the name: discarded), 'too_large' (past ``max_bytes``),
        'over_quota' or 'too_many_uploads' (a new upload the station's quota leaves no room for)."""
        self.sweep_station(station_id)
        with self.lock(sha256):
            if self.exists(sha256):
                self._claim(station_id, sha256)
                return "complete"
            if total > self.max_bytes:
                return "too_large"
            upload = self._upload(station_id, sha256)
            if upload is None:
                if start != 0:
                    return "offset_mismatch"
                with self._start_lock:
                    if len(self._names(self._partials(station_id))) >= self.max_uploads:
                        return "too_many_uploads"
                    if self.usage(station_id) + max(total, BLOB_BLOCK) > self.quota_bytes:
                        return "over_quota"
                    folder = self._partials(station_id)
                    folder.mkdir(parents=True, exist_ok=True)
                    partial = folder / f"{sha256}.{total}"
                    partial.touch()
            else:
                partial, declared = upload
                if declared != total:
                    return "total_mismatch"
            if start != _size(partial) or start + len(data) > total:
                return "offset_mismatch"
            with open(partial, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if start + len(data) < total:
                return "partial"
            whole = partial.read_bytes()  # at most max_bytes
            if hashlib.sha256(whole).hexdigest() != sha256:
                partial.unlink()
                return "hash_mismatch"
            self._write_final(sha256, whole)  # sealed; the plain upload goes
            self._claim(station_id, sha256)
            return "complete"

    def store(self, station_id: str, sha256: str, data: bytes) -> bool:
        """Keep a whole blob for a station in one call (a USB bundle's attachment): True when the central
        holds it now and the station owns it, False when refused (``store_state`` says why)."""
        return self.store_state(station_id, sha256, data) == "complete"

    def store_state(self, station_id: str, sha256: str, data: bytes) -> str:
        """As ``append`` with the whole blob at once: 'complete' (stored sealed, or already there: then only
        owned), 'hash_mismatch', 'too_large' or 'over_quota' (the station's quota, less its own unfinished
        upload of this blob, which the blob replaces)."""
        if not SHA256_NAME.fullmatch(sha256) or hashlib.sha256(data).hexdigest() != sha256:
            return "hash_mismatch"
        self.sweep_station(station_id)
        with self.lock(sha256):
            if self.exists(sha256):
                self._claim(station_id, sha256)
                return "complete"
            if len(data) > self.max_bytes:
                return "too_large"
            with self._start_lock:
                upload = self._upload(station_id, sha256)
                own = max(upload[1], BLOB_BLOCK) if upload else 0
                if self.usage(station_id) - own + max(len(data), BLOB_BLOCK) > self.quota_bytes:
                    return "over_quota"
                self._write_final(sha256, data)
                self._claim(station_id, sha256)
            return "complete"

    # -- expiry ---------------------------------------------------------------------------------------------
    def _expire(self, folder: Path, cutoff: float) -> int:
        removed = 0
        for sha, _total, name in self._names(folder):
            path = folder / name
            with self.lock(sha):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def sweep_station(self, station_id: str, now: float | None = None) -> int:
        """Remove this station's expired unfinished uploads (a few files: cheap on every request)."""
        return self._expire(self._partials(station_id), (time.time() if now is None else now) - self.partial_ttl)

    def sweep(self, now: float | None = None) -> int:
        """Remove every station's unfinished uploads no byte was added to for ``partial_ttl`` seconds (and
        those of the layout before stations had their own, ``partial/<sha256>``); returns how many."""
        cutoff = (time.time() if now is None else now) - self.partial_ttl
        removed = 0
        for entry in os.scandir(self.root / "partial"):
            if entry.is_dir(follow_symlinks=False):
                removed += self._expire(Path(entry.path), cutoff)
            elif SHA256_NAME.fullmatch(entry.name) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    def sweep_if_due(self) -> int:
        """``sweep`` when ``sweep_interval`` has passed since the last one (called from blob requests)."""
        if time.monotonic() < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return 0
        try:
            self._next_sweep = time.monotonic() + self.sweep_interval
            return self.sweep()
        finally:
            self._sweep_lock.release()


SHA256_NAME = re.compile(r"[0-9a-f]{64}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
