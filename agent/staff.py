"""Staff accounts: user name + PIN (or password) hashed with argon2, lockout after repeated failures.

This module owns the ``staff`` table: the other modules read it through the functions below."""
import re
import sqlite3
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from kiosk.core import audit
from kiosk.core.db import write_transaction

ROLES = ("agent", "supervisor")
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
_hasher = PasswordHasher()
# Verifying an unknown user costs the same as a known one, so timing does not tell which names exist.
_DUMMY_HASH = _hasher.hash("not-a-real-pin")


class LoginRefused(Exception):
    def __init__(self, reason: str, until: datetime | None = None):
        super().__init__(reason)
        self.reason = reason    # wrong | locked | inactive
        self.until = until


def check_secret(secret: str) -> str | None:
    """Why a PIN or password is too weak, or None."""
    if re.fullmatch(r"\d+", secret):
        return None if len(secret) >= 6 else "a PIN needs at least 6 digits"
    return None if len(secret) >= 10 else "a password needs at least 10 characters (or use a PIN of 6+ digits)"


def add(conn: sqlite3.Connection, username: str, display_name: str, role: str, secret: str,
        actor: str = "cli") -> int:
    if not re.fullmatch(r"[a-z][a-z0-9._-]{1,31}", username):
        raise ValueError("user name: 2-32 lower-case letters, digits, '.', '_' or '-', starting with a letter")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    problem = check_secret(secret)
    if problem:
        raise ValueError(problem)
    with write_transaction(conn):
        try:
            staff_id = conn.execute(
                "INSERT INTO staff (username, display_name, role, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (username, display_name, role, _hasher.hash(secret), datetime.now(timezone.utc).isoformat()),
            ).lastrowid
        except sqlite3.IntegrityError:
            raise ValueError(f"user name '{username}' is taken") from None
        audit.append(conn, actor, "staff.added", username, {"role": role})
    return staff_id


def login(conn: sqlite3.Connection, username: str, secret: str) -> sqlite3.Row:
    """The staff row for a correct user name and PIN; else LoginRefused (after counting the failure)."""
    now = datetime.now(timezone.utc)
    row = conn.execute("SELECT * FROM staff WHERE username = ?", (username,)).fetchone()
    if row is None:
        try:
            _hasher.verify(_DUMMY_HASH, secret)
        except VerificationError:
            pass
        raise LoginRefused("wrong")
    if not row["active"]:
        raise LoginRefused("inactive")
    if row["locked_until"] and datetime.fromisoformat(row["locked_until"]) > now:
        raise LoginRefused("locked", datetime.fromisoformat(row["locked_until"]))
    try:
        _hasher.verify(row["secret_hash"], secret)
    except (VerificationError, InvalidHashError):
        raise _count_failure(conn, row["id"], username, now) from None
    with write_transaction(conn):
        conn.execute("UPDATE staff SET failed_logins = 0, locked_until = NULL WHERE id = ?", (row["id"],))
        if _hasher.check_needs_rehash(row["secret_hash"]):
            conn.execute("UPDATE staff SET secret_hash = ? WHERE id = ?", (_hasher.hash(secret), row["id"]))
        audit.append(conn, username, "staff.login", username)
    return row


def _count_failure(conn: sqlite3.Connection, staff_id: int, username: str, now: datetime) -> LoginRefused:
    """Count a wrong PIN and lock the account at the MAX_FAILURES-th; returns the refusal to raise. The
    count is read and written in one write transaction (BEGIN IMMEDIATE), so wrong PINs typed at the same
    time on two counters are each counted: none reads the count another is about to raise. A failure that
    finds the account locked meanwhile (by a wrong PIN checked at the same time) is not counted again."""
    with write_transaction(conn):
        failed, locked = conn.execute("SELECT failed_logins, locked_until FROM staff WHERE id = ?",
                                      (staff_id,)).fetchone()
        if locked and datetime.fromisoformat(locked) > now:
            return LoginRefused("locked", datetime.fromisoformat(locked))
        failures = failed + 1
        locked_until = (now + LOCKOUT).isoformat() if failures >= MAX_FAILURES else None
        conn.execute("UPDATE staff SET failed_logins = ?, locked_until = ? WHERE id = ?",
                     (0 if locked_until else failures, locked_until, staff_id))
        audit.append(conn, username, "staff.login_failed", username, {"locked": bool(locked_until)})
    if locked_until:
        return LoginRefused("locked", now + LOCKOUT)
    return LoginRefused("wrong")


def by_id(conn: sqlite3.Connection, staff_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM staff WHERE id = ?", (staff_id,)).fetchone()


def display_name_of(conn: sqlite3.Connection, staff_id: int) -> sqlite3.Row | None:
    """The row (``display_name``) of a staff member, or None."""
    return conn.execute("SELECT display_name FROM staff WHERE id = ?", (staff_id,)).fetchone()


def usernames(conn: sqlite3.Connection) -> dict[int, str]:
    """Every staff member's user name, by id."""
    return {row["id"]: row["username"] for row in conn.execute("SELECT id, username FROM staff")}


def accounts(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """Every account for ``kiosk staff list``: user name, display name, role, lock and whether active."""
    return conn.execute("SELECT username, display_name, role, locked_until, active FROM staff ORDER BY username")


def set_state(conn: sqlite3.Connection, username: str, *, active: bool | None = None, unlock: bool = False,
              actor: str = "cli") -> None:
    """Unlock an account locked by wrong PINs, or (de)activate it; audited. Raises ValueError if unknown."""
    with write_transaction(conn):
        row = conn.execute("SELECT id FROM staff WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise ValueError(f"no staff account '{username}'")
        if unlock:
            conn.execute("UPDATE staff SET failed_logins = 0, locked_until = NULL WHERE id = ?", (row[0],))
            audit.append(conn, actor, "staff.unlocked", username)
        if active is not None:
            conn.execute("UPDATE staff SET active = ? WHERE id = ?", (int(active), row[0]))
            audit.append(conn, actor, "staff.activated" if active else "staff.deactivated", username)
