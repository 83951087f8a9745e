"""Drafts: the answers of an application in progress, sealed, kept only while the citizen is active.

A draft that has been idle longer than the station's limit is deleted the next time any draft is read,
so an abandoned application does not stay on the station.
"""
import secrets
import sqlite3
from datetime import datetime, timedelta, timezone

from . import sealing


def _now() -> datetime:
    return datetime.now(timezone.utc)


def purge_idle(conn: sqlite3.Connection, idle_minutes: int) -> int:
    cutoff = (_now() - timedelta(minutes=idle_minutes)).isoformat()
    with conn:
        return conn.execute("DELETE FROM drafts WHERE touched_at < ?", (cutoff,)).rowcount


def create(conn: sqlite3.Connection, key: bytes, slug: str, version: str, answers: dict | None = None) -> str:
    draft_id = secrets.token_urlsafe(18)
    now = _now().isoformat()
    with conn:
        conn.execute(
            "INSERT INTO drafts (id, procedure_slug, procedure_version, answers_sealed, created_at, touched_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (draft_id, slug, version, sealing.seal(key, answers or {}, draft_id), now, now),
        )
    return draft_id


def load(conn: sqlite3.Connection, key: bytes, draft_id: str, idle_minutes: int) -> tuple[str, dict] | None:
    """(procedure slug, answers), or None when the draft is gone or has been idle too long."""
    purge_idle(conn, idle_minutes)
    row = conn.execute("SELECT procedure_slug, answers_sealed FROM drafts WHERE id = ?", (draft_id,)).fetchone()
    if row is None:
        return None
    return row[0], sealing.open_sealed(key, row[1], draft_id)


def save(conn: sqlite3.Connection, key: bytes, draft_id: str, answers: dict) -> bool:
    with conn:
        return conn.execute(
            "UPDATE drafts SET answers_sealed = ?, touched_at = ? WHERE id = ?",
            (sealing.seal(key, answers, draft_id), _now().isoformat(), draft_id),
        ).rowcount == 1


def delete(conn: sqlite3.Connection, draft_id: str) -> None:
    with conn:
        conn.execute("DELETE FROM drafts WHERE id = ?", (draft_id,))
