"""The outbox: one row per submitted dossier, written in the submit transaction, read by the sync worker.

This module owns the ``outbox`` table: sync, the staff pages and the commands read and change it through
these functions, each inside the caller's transaction (a query that also needs a dossier's columns is one
query here, not one per row).

Counts are kept, not recounted (issue 18): ``outbox_tally`` holds, per state and the dossier's station id, how
many rows there are, how many went out on a USB stick and how many a later dossier supersedes; triggers
(kiosk/core/migrations.py, m017) keep it in the transaction that changes the rows, so a rollback takes the
change back with them. ``kiosk check --full`` compares it with a recount."""
import sqlite3


def enqueue(conn: sqlite3.Connection, submission_id: str, now_iso: str) -> None:
    conn.execute(
        "INSERT INTO outbox (submission_id, state, attempts, next_attempt_at, enqueued_at) "
        "VALUES (?, 'pending', 0, ?, ?)",
        (submission_id, now_iso, now_iso),
    )


def waiting(conn: sqlite3.Connection) -> dict:
    """What the staff bar's waiting banner says, in one read: how many dossiers wait to be sent and since
    when (``count``, ``oldest``), how many of them were copied to a USB bundle and wait for the central's
    acknowledgement to come back (``on_stick``; ``on_stick_at``: the latest export that carried one), and
    how many are on no stick yet (``not_on_stick``, the oldest since ``not_on_stick_oldest``). Which
    dossiers went out in which bundle is sync's record (``sync_bundle_items``), read here with the rows.

    The counts are the tally's; the oldest is the first entry of the ``outbox_waiting`` index. Only when
    some are on a stick (a mobile team's) are the bundles read, over the pending rows: the latest bundle
    holding one, and the oldest pending row on none (along the index, past those on a stick)."""
    count, on_stick = conn.execute("SELECT coalesce(SUM(n), 0), coalesce(SUM(on_stick), 0) FROM outbox_tally "
                                   "WHERE state = 'pending'").fetchone()
    oldest = oldest_pending(conn) if count else None
    on_stick_at = not_on_stick_oldest = None
    if on_stick:
        on_stick_at = conn.execute(
            "SELECT MAX(b.created_at) FROM outbox o JOIN sync_bundle_items i USING (submission_id) "
            "JOIN sync_bundles b USING (bundle_id) WHERE o.state = 'pending'").fetchone()[0]
    if count > on_stick:
        not_on_stick_oldest = oldest if not on_stick else conn.execute(
            "SELECT o.enqueued_at FROM outbox o WHERE o.state = 'pending' AND NOT EXISTS (SELECT 1 FROM "
            "sync_bundle_items i WHERE i.submission_id = o.submission_id) ORDER BY o.enqueued_at LIMIT 1"
        ).fetchone()[0]
    return {"count": count, "oldest": oldest, "on_stick": on_stick, "on_stick_at": on_stick_at,
            "not_on_stick": count - on_stick, "not_on_stick_oldest": not_on_stick_oldest}


def pending_count(conn: sqlite3.Connection) -> int:
    """How many rows wait to be sent (the tally's count)."""
    return conn.execute("SELECT coalesce(SUM(n), 0) FROM outbox_tally WHERE state = 'pending'").fetchone()[0]


def waiting_list(conn: sqlite3.Connection, limit: int = 200) -> list[sqlite3.Row]:
    """The dossiers waiting to be sent (pending: not yet acknowledged by the central), every day's, oldest
    first, at most ``limit``, with their dossier's columns and ``sync_state``, for the staff's home. One
    query along the ``outbox_waiting`` index (state, enqueued_at): no sort, whatever the queue's length."""
    return conn.execute(
        "SELECT d.*, o.state AS sync_state, o.enqueued_at FROM outbox o "
        "JOIN dossiers d USING (submission_id) WHERE o.state = 'pending' "
        "ORDER BY o.enqueued_at LIMIT ?", (limit,)).fetchall()


def pending_station_ids(conn: sqlite3.Connection) -> dict[str, int]:
    """How many pending dossiers were made under each station id (the dossier row's ``station_id``, the
    same value its sealed document carries): another id than this station's own means the station was
    re-identified with dossiers still queued, which the central refuses (``station_mismatch``). Read from
    the tally, kept per state and station id."""
    return dict(conn.execute("SELECT station_id, n FROM outbox_tally WHERE state = 'pending' AND n > 0").fetchall())


def pending_with_error(conn: sqlite3.Connection, prefix: str) -> int:
    """How many pending rows were put back with a reason that starts with ``prefix`` (exactly: a range on
    the ``outbox_pending_errors`` index, which holds only the pending rows with a reason)."""
    return conn.execute("SELECT COUNT(*) FROM outbox INDEXED BY outbox_pending_errors WHERE state = 'pending' "
                        "AND last_error >= ? AND last_error < ?", (prefix, prefix + "\U0010ffff")).fetchone()[0]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many rows are in each state (a state with none is missing), from the tally."""
    return dict(conn.execute("SELECT state, SUM(n) FROM outbox_tally GROUP BY state HAVING SUM(n) > 0").fetchall())


def oldest_pending(conn: sqlite3.Connection) -> str | None:
    return conn.execute("SELECT MIN(enqueued_at) FROM outbox WHERE state = 'pending'").fetchone()[0]


def latest_error(conn: sqlite3.Connection) -> str | None:
    """Why the pending row put back last waits, or None."""
    row = conn.execute("SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL "
                       "ORDER BY next_attempt_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


def next_due(conn: sqlite3.Connection) -> sqlite3.Row:
    """(the earliest retry time, the latest time a row was put back) of the pending rows; NULLs if none.
    Each is one end of an index (``outbox_pending``, ``outbox_deferred``)."""
    return conn.execute("SELECT (SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'), "
                        "(SELECT MAX(deferred_at) FROM outbox INDEXED BY outbox_deferred "
                        "WHERE state = 'pending')").fetchone()


def get(conn: sqlite3.Connection, submission_id: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM outbox WHERE submission_id = ?", (submission_id,)).fetchone()


def due(conn: sqlite3.Connection, now: str, latest: str, limit: int) -> list[sqlite3.Row]:
    """Pending rows to send, oldest first, with what sending needs: the dossier's sealed payload and hash,
    and the central's earlier acknowledgement if any (``prior_ack``, kept by sync in ``sync_acks``). Due are
    those whose retry time is ``now`` or before, or later than ``latest`` (no backoff puts it that far), or
    put back at a time after ``now`` (``deferred_at``): both mean a clock since corrected backwards."""
    return conn.execute(
        "SELECT o.submission_id, o.attempts, d.payload_sha256, d.payload_sealed, a.ack AS prior_ack "
        "FROM outbox o JOIN dossiers d USING (submission_id) LEFT JOIN sync_acks a USING (submission_id) "
        "WHERE o.state = 'pending' "
        "AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ? OR o.next_attempt_at > ? "
        "OR o.deferred_at > ?) ORDER BY o.next_attempt_at, o.enqueued_at LIMIT ?",
        (now, latest, now, limit)).fetchall()


def pending_payloads(conn: sqlite3.Connection, limit: int) -> list[sqlite3.Row]:
    """Every pending row whose payload is still here, oldest first, with the sealed payload and its hash
    (what a USB bundle carries)."""
    return conn.execute(
        "SELECT o.submission_id, d.payload_sealed, d.payload_sha256 FROM outbox o JOIN dossiers d "
        "USING (submission_id) WHERE o.state = 'pending' AND d.payload_sealed IS NOT NULL "
        "ORDER BY o.enqueued_at LIMIT ?", (limit,)).fetchall()


# A refusal is open until a dossier supersedes the refused one (a correction, or the same dossier sent
# again under a new code): the outbox row stays 'rejected' with its reason, for the record.

def rejected(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """The open refusals, oldest first, with their dossier's code, procedure and time, the reason, and
    ``correctable`` (its payload is still here), for the staff's rejected queue. The open ones only, from
    the ``outbox_open_refusals`` index (``superseded`` is set when a dossier supersedes the row's)."""
    return conn.execute(
        "SELECT d.tracking_code, d.procedure_code, d.submitted_at, o.last_error, o.attempts, "
        "d.payload_sealed IS NOT NULL AS correctable FROM outbox o INDEXED BY outbox_open_refusals "
        "JOIN dossiers d USING (submission_id) WHERE o.state = 'rejected' AND o.superseded = 0 "
        "ORDER BY d.submitted_at").fetchall()


def rejected_closed(conn: sqlite3.Connection, limit: int = 50) -> list[sqlite3.Row]:
    """The latest closed refusals, newest first: each refused dossier's code, procedure, time and reason,
    and the tracking code of the dossier that superseded it (``replaced_by``): the corrections newest first
    (index ``dossiers_corrections``), those of a refused dossier."""
    return conn.execute(
        "SELECT d.tracking_code, d.procedure_code, d.submitted_at, o.last_error, s.tracking_code AS replaced_by "
        "FROM outbox o JOIN dossiers s INDEXED BY dossiers_corrections ON s.supersedes = o.submission_id "
        "JOIN dossiers d ON d.submission_id = o.submission_id WHERE s.supersedes IS NOT NULL AND o.state = 'rejected' "
        "ORDER BY s.submitted_at DESC LIMIT ?", (limit,)).fetchall()


def rejected_open_count(conn: sqlite3.Connection) -> int:
    """How many refusals are open (the staff bar's count): the refused rows that no dossier supersedes,
    from the tally."""
    return conn.execute("SELECT coalesce(SUM(n - superseded), 0) FROM outbox_tally "
                        "WHERE state = 'rejected'").fetchone()[0]


def rejected_reasons(conn: sqlite3.Connection, limit: int = 50) -> list[dict]:
    """The first refused rows: submission id, tracking code and the reason, for ``sync status``."""
    return [dict(r) for r in conn.execute(
        "SELECT o.submission_id, d.tracking_code, o.last_error AS reason FROM outbox o JOIN dossiers d "
        "USING (submission_id) WHERE o.state = 'rejected' ORDER BY o.enqueued_at LIMIT ?", (limit,))]


def sent_purged_count(conn: sqlite3.Connection) -> int:
    """How many sent rows have had their payload purged (nothing here could send them again)."""
    return conn.execute(
        "SELECT COUNT(*) FROM outbox o JOIN dossiers d USING (submission_id) WHERE o.state = 'sent' "
        "AND d.payload_sealed IS NULL").fetchone()[0]


def sent_purged_after(conn: sqlite3.Connection, after: str, limit: int = 500) -> list[str]:
    """The submission ids of sent rows whose payload is purged, after ``after`` in id order."""
    return [r[0] for r in conn.execute(
        "SELECT o.submission_id FROM outbox o JOIN dossiers d USING (submission_id) WHERE o.state = 'sent' "
        "AND d.payload_sealed IS NULL AND o.submission_id > ? ORDER BY o.submission_id LIMIT ?",
        (after, limit))]


# -- changes, each inside the caller's transaction ------------------------------------------------------

def mark_sent(conn: sqlite3.Connection, submission_id: str) -> bool:
    """The central acknowledged the dossier; False when the row was already sent (nothing changed)."""
    return conn.execute("UPDATE outbox SET state = 'sent', last_error = NULL, next_attempt_at = NULL "
                        "WHERE submission_id = ? AND state != 'sent'", (submission_id,)).rowcount > 0


def mark_rejected(conn: sqlite3.Connection, submission_id: str, reason: str) -> bool:
    """The central refused a pending row (counted as an attempt, never retried); False when not pending."""
    return conn.execute("UPDATE outbox SET state = 'rejected', last_error = ?, attempts = attempts + 1, "
                        "next_attempt_at = NULL WHERE submission_id = ? AND state = 'pending'",
                        (reason[:300], submission_id)).rowcount > 0


def withdraw(conn: sqlite3.Connection, submission_id: str, reason: str) -> None:
    """Take the row out of sending for good, whatever its state (its dossier went again under a new code)."""
    conn.execute("UPDATE outbox SET state = 'rejected', last_error = ?, next_attempt_at = NULL "
                 "WHERE submission_id = ?", (reason, submission_id))


def defer(conn: sqlite3.Connection, submission_ids: list[str], reason: str, due_at: str, now: str) -> None:
    """Put pending rows back to wait until ``due_at``, counting an attempt, noting why and when."""
    conn.executemany(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, deferred_at = ? "
        "WHERE submission_id = ? AND state = 'pending'",
        [(reason[:300], due_at, now, sid) for sid in submission_ids])


def resend_acknowledged(conn: sqlite3.Connection, reason: str, every_store: bool, store: str) -> int:
    """Make sent rows pending again (with ``reason``) when their payload is still here and their
    acknowledgement came from another store than ``store`` (or from any, ``every_store``): the central
    went back in time. Returns how many."""
    return conn.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = NULL, last_error = ? "
        "WHERE state = 'sent' AND submission_id IN (SELECT d.submission_id FROM dossiers d "
        "JOIN sync_acks a USING (submission_id) WHERE d.payload_sealed IS NOT NULL "
        "AND (? OR a.store IS NULL OR a.store != ?))",
        (reason, int(every_store), store)).rowcount
