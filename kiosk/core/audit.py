"""Audit events: append-only and hash-chained, so an edited or removed event is found by ``verify``.

No personal data goes into an event: subjects are submission ids and tracking codes, details are counts,
codes and states.
"""
import hashlib
import json
import sqlite3
from datetime import datetime, timezone

GENESIS = "0" * 64


def _event_hash(prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str | None,
                detail: str) -> str:
    body = json.dumps([prev_hash, seq, at, actor, action, subject, detail], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def append(conn: sqlite3.Connection, actor: str, action: str, subject: str | None = None,
           detail: dict | None = None) -> None:
    """Append one event; call inside the transaction of the change it records."""
    last = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    detail_json = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True)
    conn.execute(
        "INSERT INTO audit_events (seq, at, actor, action, subject, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, actor, action, subject, detail_json, prev_hash,
         _event_hash(prev_hash, seq, at, actor, action, subject, detail_json)),
    )


def verify(conn: sqlite3.Connection) -> list[str]:
    """Every break in the chain, as a sentence; an empty list means the log is whole."""
    problems, prev_hash, expected_seq = [], GENESIS, 1
    for row in conn.execute("SELECT seq, at, actor, action, subject, detail, prev_hash, hash "
                            "FROM audit_events ORDER BY seq"):
        seq, at, actor, action, subject, detail, stored_prev, stored_hash = tuple(row)
        if seq != expected_seq:
            problems.append(f"event {expected_seq}..{seq - 1} missing")
        if stored_prev != prev_hash:
            problems.append(f"event {seq}: does not follow the event before it")
        if _event_hash(stored_prev, seq, at, actor, action, subject, detail) != stored_hash:
            problems.append(f"event {seq}: content changed after it was written")
        prev_hash, expected_seq = stored_hash, seq + 1
    return problems


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_events").fetchone()[0]


def code_changes(conn: sqlite3.Connection, limit: int = 200) -> list[dict]:
    """The latest official codes (mã hồ sơ) the central changed: tracking code, ``before``, ``after``."""
    return [dict(r) for r in conn.execute(
        "SELECT d.tracking_code, json_extract(e.detail, '$.from') AS before, json_extract(e.detail, '$.to') AS after "
        "FROM audit_events e JOIN dossiers d ON d.submission_id = e.subject "
        "WHERE e.action = 'dossier.code_changed' ORDER BY e.seq DESC LIMIT ?", (limit,))]


def reissues(conn: sqlite3.Connection, limit: int = 200) -> list[dict]:
    """The latest dossiers sent again under a new tracking code: the old code ``before``, the new ``after``."""
    return [dict(r) for r in conn.execute(
        "SELECT json_extract(e.detail, '$.from') AS before, d.tracking_code AS after FROM audit_events e "
        "JOIN dossiers d ON d.submission_id = e.subject WHERE e.action = 'dossier.reissued' "
        "ORDER BY e.seq DESC LIMIT ?", (limit,))]
