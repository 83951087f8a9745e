"""Staff accounts: user name + PIN (or password) hashed with argon2, lockout after repeated failures, and
the staff sessions held on the server.

This module owns the ``staff`` and ``staff_sessions`` tables: the other modules read them through the
functions below.

A login answers the same for a wrong PIN, an unknown user name, a locked account and a deactivated one,
and costs one argon2 verification in every case, so neither the words nor the time say which names exist
or which accounts are locked. Only the right PIN of a deactivated account that is not locked is told why
(the person has proven who they are; wrong PINs on it are counted and lock it like any other). A locked
account's PIN is not checked at all until the lock ends: telling the right PIN apart from a wrong one then
would let anyone go on guessing through the lock.

A session's cookie holds a random id and nothing else; its row here (only the id's sha256) says whose it
is, the role it was opened with, and when it was opened and last used. ``session_of`` checks the row on
every request: ended (logged out), idle, older than a shift, the account deactivated or its role changed
all end it there and then."""
import hashlib
import re
import secrets
import sqlite3
import time
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from kiosk.core import audit
from kiosk.core.db import storage_problem, write_transaction

ROLES = ("agent", "supervisor")
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
_hasher = PasswordHasher()
# Verifying an unknown user or a locked account costs the same as a known one, so timing does not tell
# which names exist or which accounts are locked.
_DUMMY_HASH = _hasher.hash("not-a-real-pin")

SEEN_RESOLUTION_S = 30  # a session's last_seen_at is written at most this often (a request is a read)
KEEP_SESSIONS = timedelta(days=7)  # rows of sessions opened before this are deleted at the next login


def _now() -> datetime:
    """The clock of logins and sessions (UTC); tests move it."""
    return datetime.fromtimestamp(time.time(), timezone.utc)


class LoginRefused(Exception):
    def __init__(self, reason: str, until: datetime | None = None):
        super().__init__(reason)
        self.reason = reason    # wrong | locked | inactive (inactive only after the right PIN)
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


def _dummy_verify(secret: str) -> None:
    """What checking a PIN costs, for an answer that must not be told apart from one that checked it."""
    try:
        _hasher.verify(_DUMMY_HASH, secret)
    except VerificationError:
        pass


def login(conn: sqlite3.Connection, username: str, secret: str) -> sqlite3.Row:
    """The staff row for a correct user name and PIN; else LoginRefused (after counting the failure).

    Every path costs one argon2 verification. A locked account's PIN is not checked (reason "locked",
    whatever was typed); a deactivated account's is, and only its right PIN gives the reason "inactive"."""
    now = _now()
    row = conn.execute("SELECT * FROM staff WHERE username = ?", (username,)).fetchone()
    if row is None:
        _dummy_verify(secret)
        raise LoginRefused("wrong")
    if row["locked_until"] and datetime.fromisoformat(row["locked_until"]) > now:
        _dummy_verify(secret)
        raise LoginRefused("locked", datetime.fromisoformat(row["locked_until"]))
    try:
        _hasher.verify(row["secret_hash"], secret)
    except (VerificationError, InvalidHashError):
        raise _count_failure(conn, row["id"], username, now) from None
    if not row["active"]:
        raise LoginRefused("inactive")
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


def display_names(conn: sqlite3.Connection) -> dict[str, str]:
    """Every staff member's display name (what people call them), by user name."""
    return {row["username"]: row["display_name"] for row in conn.execute("SELECT username, display_name FROM staff")}


def accounts(conn: sqlite3.Connection, idle_s: float, max_s: float) -> list[dict]:
    """Every account for ``kiosk staff list``: user name, display name, role, whether active, the end of
    its lock if it is locked now (else None), and how many sessions it has open (not ended, and neither
    idle for ``idle_s`` seconds nor older than ``max_s``: what ``session_of`` would still let in)."""
    now = _now()
    seen_since = (now - timedelta(seconds=idle_s + SEEN_RESOLUTION_S)).isoformat()
    opened_since = (now - timedelta(seconds=max_s)).isoformat()
    found = []
    for row in conn.execute(
            "SELECT st.username, st.display_name, st.role, st.locked_until, st.active, "
            "(SELECT COUNT(*) FROM staff_sessions s WHERE s.staff_id = st.id AND s.ended_at IS NULL "
            " AND s.last_seen_at >= ? AND s.created_at >= ?) AS sessions "
            "FROM staff st ORDER BY st.username", (seen_since, opened_since)):
        locked = row["locked_until"] and datetime.fromisoformat(row["locked_until"])
        found.append({**dict(row), "locked_until": locked if locked and locked > now else None})
    return found


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
            # A deactivated account's open sessions end now (session_of would end them on their next
            # request anyway); activating it again opens none of them.
            ended = 0 if active else _end_sessions_of(conn, row[0], "deactivated")
            audit.append(conn, actor, "staff.activated" if active else "staff.deactivated", username,
                         None if active else {"sessions_ended": ended})


# --- sessions --------------------------------------------------------------------------------------------

def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _end_sessions_of(conn: sqlite3.Connection, staff_id: int, reason: str) -> int:
    """End every open session of one account (inside the caller's write transaction); how many."""
    return conn.execute("UPDATE staff_sessions SET ended_at = ?, end_reason = ? WHERE staff_id = ? AND ended_at IS NULL",
                        (_now().isoformat(), reason, staff_id)).rowcount


def start_session(conn: sqlite3.Connection, row: sqlite3.Row) -> str:
    """Open a session for the account ``row`` (as ``login`` returned it); returns the random id for the
    cookie. Only its sha256 is stored, so a copy of the database opens no session."""
    token = secrets.token_urlsafe(32)
    now = _now()
    with write_transaction(conn):
        conn.execute("DELETE FROM staff_sessions WHERE created_at < ?", ((now - KEEP_SESSIONS).isoformat(),))
        conn.execute("INSERT INTO staff_sessions (id_sha256, staff_id, role, created_at, last_seen_at) "
                     "VALUES (?, ?, ?, ?, ?)", (_digest(token), row["id"], row["role"], now.isoformat(), now.isoformat()))
    return token


def end_session(conn: sqlite3.Connection, token: str, reason: str = "logout") -> bool:
    """End the session of ``token`` if it is open (a logout, or another login on the same browser); audited.
    Whether it was open."""
    digest = _digest(str(token))
    with write_transaction(conn):
        row = conn.execute("SELECT st.username FROM staff_sessions s JOIN staff st ON st.id = s.staff_id "
                           "WHERE s.id_sha256 = ? AND s.ended_at IS NULL", (digest,)).fetchone()
        if row is None:
            return False
        conn.execute("UPDATE staff_sessions SET ended_at = ?, end_reason = ? WHERE id_sha256 = ?",
                     (_now().isoformat(), reason, digest))
        if reason == "logout":
            audit.append(conn, row["username"], "staff.logout", row["username"])
        else:
            audit.append(conn, row["username"], "staff.session_ended", row["username"], {"reason": reason})
    return True


def session_of(conn: sqlite3.Connection, token, idle_s: float, max_s: float,
               touch: bool = True) -> tuple[dict | None, str | None]:
    """Who a session cookie's ``token`` belongs to: ({id, username, role, name}, None) while the session is
    open, else (None, why it ended). A session idle for more than ``idle_s`` seconds, opened more than
    ``max_s`` seconds ago, whose account was deactivated or whose role is no longer the one it was opened
    with is ended here (audited). One indexed read per request; with ``touch`` (a request that is
    activity) the row's last_seen_at is written when it is SEEN_RESOLUTION_S old or more, so the idle
    limit counts from at most that long before the last request (an idle session is given that much more,
    never less)."""
    if not isinstance(token, str) or not 16 <= len(token) <= 128:
        return None, "unknown"
    digest = _digest(token)
    row = conn.execute(
        "SELECT s.staff_id, s.role AS opened_as, s.created_at, s.last_seen_at, s.ended_at, s.end_reason, "
        "st.username, st.display_name, st.role, st.active "
        "FROM staff_sessions s JOIN staff st ON st.id = s.staff_id WHERE s.id_sha256 = ?", (digest,)).fetchone()
    if row is None:
        return None, "unknown"
    if row["ended_at"] is not None:
        return None, row["end_reason"]
    now = _now()
    idle = (now - datetime.fromisoformat(row["last_seen_at"])).total_seconds()
    if not row["active"]:
        reason = "deactivated"
    elif row["role"] != row["opened_as"]:
        reason = "role_changed"
    elif (now - datetime.fromisoformat(row["created_at"])).total_seconds() > max_s:
        reason = "expired"
    elif idle > idle_s + SEEN_RESOLUTION_S:
        reason = "idle"
    else:
        if touch and idle >= SEEN_RESOLUTION_S:
            try:
                with write_transaction(conn):
                    conn.execute("UPDATE staff_sessions SET last_seen_at = ? WHERE id_sha256 = ? AND ended_at IS NULL",
                                 (now.isoformat(), digest))
            except (sqlite3.Error, OSError) as exc:
                # A full or read-only disk (the station's health check says so and pauses new work): staff
                # can still read their pages; the idle clock counts from the last write that went through.
                if storage_problem(exc) is None:
                    raise
        return {"id": row["staff_id"], "username": row["username"], "role": row["role"],
                "name": row["display_name"]}, None
    end_session(conn, token, reason)
    return None, reason
