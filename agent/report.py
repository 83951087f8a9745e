"""The end-of-day report of a station: dossiers by procedure, fees expected against fees taken, reprints
and what has not been sent yet, per staff member and for the whole station; and the day's satisfaction
ratings (kiosk/core/ratings.py), for the station only: a rating belongs to no one, not even to the clerk.

Every number is counted from the dossiers and the ledger themselves, so the report reconciles with them
by construction; a supervisor's sign-off stores the report with its hash.

This module owns the counter's money tables, ``ledger`` (every fee taken and every reprint, one row each)
and ``day_closings``.
"""
import hashlib
import json
import sqlite3
from datetime import datetime, timezone

from kiosk.core import audit, dossiers, ratings
from kiosk.core.db import write_transaction

from . import staff


def _bucket() -> dict:
    return {"dossiers": 0, "by_procedure": {}, "fees_expected_vnd": 0, "fees_taken_vnd": 0, "reprints": 0,
            "unsynced": 0}


def day_report(conn: sqlite3.Connection, day: str) -> dict:
    """The report of local day ``day`` (YYYY-MM-DD). Kiosk dossiers (no staff) count under "kiosk"."""
    people = staff.usernames(conn)
    by_staff: dict[str, dict] = {}
    station = _bucket()

    def bucket(staff_id):
        return by_staff.setdefault(people.get(staff_id, "kiosk"), _bucket())

    for row in dossiers.of_day(conn, day):
        for target in (bucket(row["staff_id"]), station):
            target["dossiers"] += 1
            target["by_procedure"][row["procedure_code"]] = target["by_procedure"].get(row["procedure_code"], 0) + 1
            if row["staff_id"] is not None:  # a fee is taken at a counter; at a kiosk it is paid later
                target["fees_expected_vnd"] += row["fee_due_vnd"]
            if row["state"] != "sent":
                target["unsynced"] += 1
    for row in conn.execute("SELECT staff_id, kind, amount_vnd FROM ledger WHERE local_day = ?", (day,)):
        for target in (bucket(row["staff_id"]), station):
            if row["kind"] == "fee":
                target["fees_taken_vnd"] += row["amount_vnd"]
            else:
                target["reprints"] += 1
    for target in (*by_staff.values(), station):
        target["fee_difference_vnd"] = target["fees_taken_vnd"] - target["fees_expected_vnd"]
    names = staff.display_names(conn)
    return {"day": day, "station": station, "by_staff": dict(sorted(by_staff.items())),
            "names": {who: names[who] for who in by_staff if who in names},
            "ratings": ratings.day_summary(conn, day)}


def record_fee(conn: sqlite3.Connection, submitted: dossiers.Submitted, staff_id: int, amount_vnd: int,
               actor: str) -> None:
    """A fee taken in cash for a dossier submitted at the counter, inside its submit transaction
    (``dossiers.submit(also_write=...)``), audited with the fee due (kiosk.core.fees, as the dossier keeps
    it: the end-of-day difference is what was taken less that)."""
    _record(conn, submitted.submitted_at.isoformat(timespec="seconds"), submitted.local_day, staff_id, "fee",
            submitted.submission_id, amount_vnd)
    due = submitted.fee.amount_vnd if submitted.fee is not None else None
    audit.append(conn, actor, "fee.taken", submitted.submission_id, {"amount_vnd": amount_vnd, "due_vnd": due})


def record_reprint(conn: sqlite3.Connection, at: str, local_day: str, staff_id: int, submission_id: str) -> None:
    """A receipt reprinted by staff, inside the caller's transaction."""
    _record(conn, at, local_day, staff_id, "reprint", submission_id, 0)


def _record(conn: sqlite3.Connection, at: str, local_day: str, staff_id: int, kind: str, submission_id: str,
            amount_vnd: int) -> None:
    conn.execute("INSERT INTO ledger (at, local_day, staff_id, kind, submission_id, amount_vnd) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (at, local_day, staff_id, kind, submission_id, amount_vnd))


def ledger_of(conn: sqlite3.Connection, submission_id: str) -> list[sqlite3.Row]:
    """The ledger lines of one dossier, oldest first, each with the ``username`` of who took it."""
    return conn.execute("SELECT l.*, s.username FROM ledger l JOIN staff s ON s.id = l.staff_id "
                        "WHERE submission_id = ? ORDER BY l.id", (submission_id,)).fetchall()


def closing(conn: sqlite3.Connection, day: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM day_closings WHERE local_day = ?", (day,)).fetchone()


def sign_off(conn: sqlite3.Connection, day: str, supervisor: sqlite3.Row) -> dict:
    """Store the day's report as signed by ``supervisor``; a day is signed once."""
    if supervisor["role"] != "supervisor":
        raise PermissionError("only a supervisor signs off a day")
    report = day_report(conn, day)
    text = json.dumps(report, ensure_ascii=False, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    with write_transaction(conn):
        if closing(conn, day) is not None:
            raise ValueError(f"{day} is already signed off")
        conn.execute("INSERT INTO day_closings (local_day, report, report_sha256, signed_by, signed_at) "
                     "VALUES (?, ?, ?, ?, ?)",
                     (day, text, digest, supervisor["id"], datetime.now(timezone.utc).isoformat()))
        audit.append(conn, supervisor["username"], "day.signed_off", day, {"report_sha256": digest})
    return report
