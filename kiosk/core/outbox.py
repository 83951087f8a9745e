"""The outbox: one row per submitted dossier, written in the submit transaction, read by the sync worker."""
import sqlite3


def enqueue(conn: sqlite3.Connection, submission_id: str, now_iso: str) -> None:
    conn.execute(
        "INSERT INTO outbox (submission_id, state, attempts, next_attempt_at, enqueued_at) "
        "VALUES (?, 'pending', 0, ?, ?)",
        (submission_id, now_iso, now_iso),
    )


def waiting(conn: sqlite3.Connection) -> dict:
    """How many dossiers wait to be sent and since when (the oldest), for banners and `sync status`."""
    row = conn.execute(
        "SELECT COUNT(*), MIN(enqueued_at) FROM outbox WHERE state = 'pending'"
    ).fetchone()
    return {"count": row[0], "oldest": row[1]}
