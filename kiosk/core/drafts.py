"""Drafts: the answers of an application in progress, sealed, kept only while the citizen is active.

A draft idle longer than the station's limit can no longer be opened, and is deleted by the next sweep
(``purge_idle``; the web app runs it at most once a minute, on a request that reads a draft: see
kiosk/web.py), so an abandoned application does not stay on the station.
"""
import secrets
import sqlite3
from datetime import datetime, timedelta, timezone

from . import sealing
from .db import write_transaction

SUPERSEDES_KEY = "_supersedes"  # in a draft's answers: the dossier a correction replaces (agent/views.py)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _cutoff(idle_minutes: int) -> str:
    return (_now() - timedelta(minutes=idle_minutes)).isoformat()


def purge_idle(conn: sqlite3.Connection, idle_minutes: int) -> int:
    """Delete every draft idle longer than ``idle_minutes``; returns how many."""
    with write_transaction(conn):
        return conn.execute("DELETE FROM drafts WHERE touched_at < ?", (_cutoff(idle_minutes),)).rowcount


def create(conn: sqlite3.Connection, key: bytes, slug: str, version: str, answers: dict | None = None,
           release: int | None = None) -> str:
    """A new draft; a correction's (``answers`` naming the dossier it replaces under ``SUPERSEDES_KEY``)
    notes that dossier in the clear too, so a second correction of it finds this one (``correction_of``).
    ``release`` is the catalog release of the definition (``Procedure.release``): the draft finishes on it
    whatever the station switches to meanwhile (``release_of``)."""
    draft_id = secrets.token_urlsafe(18)
    now = _now().isoformat()
    sealed = sealing.seal(key, answers or {}, draft_id)
    supersedes = (answers or {}).get(SUPERSEDES_KEY)
    with write_transaction(conn, durable=False):
        conn.execute(
            "INSERT INTO drafts (id, procedure_slug, procedure_version, answers_sealed, created_at, touched_at, "
            "supersedes, catalog_release) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (draft_id, slug, version, sealed, now, now, supersedes, release),
        )
    return draft_id


def correction_of(conn: sqlite3.Connection, submission_id: str, idle_minutes: int) -> tuple[str, str] | None:
    """(draft id, procedure slug) of the newest correction of a dossier still open (not idle too long), or
    None: a dossier has one correction under way at a time."""
    row = conn.execute("SELECT id, procedure_slug FROM drafts WHERE supersedes = ? AND touched_at >= ? "
                       "ORDER BY touched_at DESC LIMIT 1", (submission_id, _cutoff(idle_minutes))).fetchone()
    return (row[0], row[1]) if row else None


def load(conn: sqlite3.Connection, key: bytes, draft_id: str, idle_minutes: int) -> tuple[str, dict] | None:
    """(procedure slug, answers), or None when the draft is gone or has been idle too long."""
    row = conn.execute("SELECT procedure_slug, answers_sealed FROM drafts WHERE id = ? AND touched_at >= ?",
                       (draft_id, _cutoff(idle_minutes))).fetchone()
    if row is None:
        return None
    return row[0], sealing.open_sealed(key, row[1], draft_id)


def release_of(conn: sqlite3.Connection, draft_id: str, idle_minutes: int) -> tuple[bool, int | None]:
    """(whether the draft can still be opened, as ``load`` says; the catalog release it started on, None
    for the catalog of paths.procedures)."""
    row = conn.execute("SELECT catalog_release FROM drafts WHERE id = ? AND touched_at >= ?",
                       (draft_id, _cutoff(idle_minutes))).fetchone()
    return (True, row[0]) if row else (False, None)


def save(conn: sqlite3.Connection, key: bytes, draft_id: str, answers: dict) -> bool:
    sealed = sealing.seal(key, answers, draft_id)  # outside the write lock: the lock is for the database
    with write_transaction(conn, durable=False):
        return conn.execute(
            "UPDATE drafts SET answers_sealed = ?, touched_at = ? WHERE id = ?",
            (sealed, _now().isoformat(), draft_id),
        ).rowcount == 1


def delete(conn: sqlite3.Connection, draft_id: str) -> None:
    with write_transaction(conn):
        conn.execute("DELETE FROM drafts WHERE id = ?", (draft_id,))


def exists(conn: sqlite3.Connection, draft_id: str) -> bool:
    return conn.execute("SELECT 1 FROM drafts WHERE id = ?", (draft_id,)).fetchone() is not None


def take(conn: sqlite3.Connection, draft_id: str) -> bool:
    """Delete the draft inside the caller's transaction (the submit that uses it up); False when it was
    already gone."""
    return conn.execute("DELETE FROM drafts WHERE id = ?", (draft_id,)).rowcount > 0


def one_sealed(conn: sqlite3.Connection) -> tuple | None:
    """(id, sealed answers) of any draft, to try a key on."""
    return conn.execute("SELECT id, answers_sealed FROM drafts LIMIT 1").fetchone()
