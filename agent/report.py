"""The end-of-day report of a station: dossiers by procedure, fees expected against fees taken, money carried
over by corrections and given back, reprints and what has not been sent yet, per staff member and for the
whole station; and the day's satisfaction ratings (kiosk/core/ratings.py), for the station only: a rating
belongs to no one, not even to the clerk.

Every number is counted from the dossiers and the ledger themselves, so the report reconciles with them
by construction. A supervisor's sign-off stores the report with its hash: from then on the day's page
shows that snapshot (its hash checked), and what is written after it goes to a later day's report (the
rule is ``home_day``). A supervisor may reopen a signed day with a reason; every closing is kept.

Money moves with a correction (docs/counter-money.md): what the citizen paid for the dossier a
correction replaces is *carried* to the correction (a ledger line naming both), so the fee is not taken
twice; only a higher fee for the new answers is taken, and a lower one is given back (a *refund* line).

This module owns the counter's money tables, ``ledger`` (every fee taken, carried, given back and every
reprint, one row each, never changed) and ``day_closings``.
"""
import hashlib
import json
import sqlite3
from datetime import date, datetime, timedelta, timezone

from kiosk.core import audit, dossiers, ratings
from kiosk.core.db import write_transaction

from . import staff

LOOK_BACK_DAYS = 31  # how far back a day's report looks for entries written after their own day was signed
MONEY_IN = {"fee": 1, "carried": 1, "refund": -1}  # what each line adds to what a dossier's citizen has paid
REOPEN_REASON_LENGTH = (5, 200)


def _second(iso: str) -> str:
    """A stored time (UTC, ISO 8601, as every time here is written) to the whole second: entries and
    closings are compared at that precision, an entry in the second of a sign-off counting after it."""
    return iso[:19]


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _bucket() -> dict:
    return {"dossiers": 0, "by_procedure": {}, "fees_expected_vnd": 0, "fees_taken_vnd": 0, "carried_vnd": 0,
            "refunds_expected_vnd": 0, "refunds_vnd": 0, "reprints": 0, "unsynced": 0}


# --- which day's report an entry belongs to -----------------------------------------------------------

def _closings(conn: sqlite3.Connection, first_day: str, last_day: str) -> dict[str, list[sqlite3.Row]]:
    """Every closing (active or reopened) of the days from ``first_day`` to ``last_day``, by day."""
    found: dict[str, list[sqlite3.Row]] = {}
    for row in conn.execute("SELECT local_day, signed_at, reopened_at FROM day_closings "
                            "WHERE local_day BETWEEN ? AND ? ORDER BY id", (first_day, last_day)):
        found.setdefault(row["local_day"], []).append(row)
    return found


def _covers(closing: sqlite3.Row, at: str) -> bool:
    """Was ``closing`` active at ``at`` (from its signature until it was reopened)?"""
    at = _second(at)
    return _second(closing["signed_at"]) <= at and (closing["reopened_at"] is None
                                                    or at < _second(closing["reopened_at"]))


def home_day(local_day: str, at: str, closings: dict[str, list[sqlite3.Row]], last_day: str) -> str | None:
    """The day whose report holds an entry (a dossier or a ledger line) written at ``at`` on the station's
    day ``local_day``: the first day from ``local_day`` on that had no active closing at ``at``. None when
    that is after ``last_day`` (``closings`` must hold the days up to it)."""
    day = date.fromisoformat(local_day)
    last = date.fromisoformat(last_day)
    while day <= last:
        if not any(_covers(c, at) for c in closings.get(day.isoformat(), ())):
            return day.isoformat()
        day += timedelta(days=1)
    return None


def _ledger_lines(conn: sqlite3.Connection, local_day: str, made_from: str = "",
                  made_before: str | None = None) -> list[sqlite3.Row]:
    """The ledger lines of a station day, or those written in [made_from, made_before), each with its
    dossier's tracking code (and, for a carried line, the code it was carried from)."""
    return conn.execute(
        "SELECT l.*, d.tracking_code, f.tracking_code AS from_code FROM ledger l "
        "JOIN dossiers d ON d.submission_id = l.submission_id "
        "LEFT JOIN dossiers f ON f.submission_id = l.from_submission_id WHERE l.local_day = ? "
        "AND substr(l.at, 1, 19) >= ? AND (? IS NULL OR substr(l.at, 1, 19) < ?) ORDER BY l.id",
        (local_day, made_from, made_before, made_before)).fetchall()


def _written_while_signed(conn: sqlite3.Connection, local_day: str, closings: list[sqlite3.Row],
                          not_before: str = ""):
    """(dossiers, ledger lines) of ``local_day`` written while one of its ``closings`` was active (and not
    before ``not_before``): the entries that went to a later day's report. Each closing's span is read
    through the day's index."""
    found_dossiers, found_lines = [], []
    for closing in closings:
        start = max(_second(closing["signed_at"]), not_before)
        end = _second(closing["reopened_at"]) if closing["reopened_at"] else None
        if end is not None and start >= end:
            continue
        found_dossiers += dossiers.of_day(conn, local_day, start, end).fetchall()
        found_lines += _ledger_lines(conn, local_day, start, end)
    return found_dossiers, found_lines


def _entries(conn: sqlite3.Connection, day: str, before: str | None):
    """The dossiers and ledger lines of ``day``'s report: the day's own, less those written while it was
    signed, and the late ones of the ``LOOK_BACK_DAYS`` before it that landed on it; ``before``: only
    what was written before that second (a sign-off in progress). Returns (dossiers, lines, late), late
    being one item per day and dossier: {"day", "tracking_code", "at", "kinds", "cash_vnd"}."""
    first = (date.fromisoformat(day) - timedelta(days=LOOK_BACK_DAYS)).isoformat()
    closings = _closings(conn, first, day)
    own = closings.get(day, [])
    rows = [(r, r["submitted_at"], day) for r in dossiers.of_day(conn, day)
            if not any(_covers(c, r["submitted_at"]) for c in own)]
    lines = [(r, r["at"], day) for r in _ledger_lines(conn, day) if not any(_covers(c, r["at"]) for c in own)]
    # Only the signed days right before this one can send it entries, and an entry older than the day
    # before it must have been written while that day too was signed.
    run, previous = [], date.fromisoformat(day) - timedelta(days=1)
    while previous.isoformat() in closings and len(run) < LOOK_BACK_DAYS:
        run.append(previous.isoformat())
        previous -= timedelta(days=1)
    older_from = min(_second(c["signed_at"]) for c in closings[run[0]]) if run else ""
    for earlier in reversed(run):
        late_rows, late_lines = _written_while_signed(conn, earlier, closings[earlier],
                                                      "" if earlier == run[0] else older_from)
        rows += [(r, r["submitted_at"], earlier) for r in late_rows
                 if home_day(earlier, r["submitted_at"], closings, day) == day]
        lines += [(r, r["at"], earlier) for r in late_lines if home_day(earlier, r["at"], closings, day) == day]
    if before is not None:
        rows = [e for e in rows if _second(e[1]) < before]
        lines = [e for e in lines if _second(e[1]) < before]
    late: dict[tuple[str, str], dict] = {}
    for entry, at, origin in rows + lines:
        if origin == day:
            continue
        item = late.setdefault((origin, entry["tracking_code"]), {
            "day": origin, "tracking_code": entry["tracking_code"], "at": at, "kinds": [], "cash_vnd": 0})
        item["at"] = min(item["at"], at)
        item["kinds"].append(entry["kind"] if "kind" in entry.keys() else "dossier")
        if "kind" in entry.keys() and entry["kind"] in ("fee", "refund"):
            item["cash_vnd"] += MONEY_IN[entry["kind"]] * entry["amount_vnd"]
    return ([r for r, _at, _o in rows], [line for line, _at, _o in lines],
            sorted(late.values(), key=lambda e: (e["day"], e["at"], e["tracking_code"])))


def moved_out(conn: sqlite3.Connection, day: str) -> list[dict]:
    """Where the entries of ``day`` written while it was signed went: [{"day": a later day, "dossiers": how
    many dossiers had entries go there}], within ``LOOK_BACK_DAYS`` (live, whatever the day's snapshot says)."""
    last = (date.fromisoformat(day) + timedelta(days=LOOK_BACK_DAYS)).isoformat()
    closings = _closings(conn, day, last)
    if day not in closings:
        return []
    rows, lines = _written_while_signed(conn, day, closings[day])
    counts: dict[str, set] = {}
    for entry, at in [(r, r["submitted_at"]) for r in rows] + [(line, line["at"]) for line in lines]:
        target = home_day(day, at, closings, last)
        if target is not None and target != day:
            counts.setdefault(target, set()).add(entry["tracking_code"])
    return [{"day": target, "dossiers": len(codes)} for target, codes in sorted(counts.items())]


# --- the report -------------------------------------------------------------------------------------

def day_report(conn: sqlite3.Connection, day: str, *, before: str | None = None) -> dict:
    """The report of local day ``day`` (YYYY-MM-DD), live. Kiosk dossiers (no staff) count under "kiosk".

    Fees expected: the fee due of each counter dossier less what was carried to it from the dossier it
    corrects (never below 0; a correction whose fee is lower expects that much given back instead). The
    difference is what was taken less what was given back, against what was expected less what was to
    be given back: 0 when the cash is right. ``before`` (UTC, whole seconds): leave out what was written
    from then on (``sign_off``)."""
    people = staff.usernames(conn)
    by_staff: dict[str, dict] = {}
    station = _bucket()
    rows, lines, late = _entries(conn, day, before)

    def bucket(staff_id):
        return by_staff.setdefault(people.get(staff_id, "kiosk"), _bucket())

    carried_in: dict[str, int] = {}
    corrections = []
    for line in lines:
        if line["kind"] == "carried":
            carried_in[line["submission_id"]] = carried_in.get(line["submission_id"], 0) + line["amount_vnd"]
            corrections.append({"tracking_code": line["tracking_code"], "from_code": line["from_code"],
                                "carried_vnd": line["amount_vnd"], "submission_id": line["submission_id"]})
    due_of = {}
    for row in rows:
        due_of[row["submission_id"]] = row["fee_due_vnd"]
        for target in (bucket(row["staff_id"]), station):
            target["dossiers"] += 1
            target["by_procedure"][row["procedure_code"]] = target["by_procedure"].get(row["procedure_code"], 0) + 1
            if row["staff_id"] is not None:  # a fee is taken at a counter; at a kiosk it is paid later
                owed = row["fee_due_vnd"] - carried_in.get(row["submission_id"], 0)
                target["fees_expected_vnd"] += max(0, owed)
                target["refunds_expected_vnd"] += max(0, -owed)
            if row["state"] != "sent":
                target["unsynced"] += 1
    taken_for: dict[str, int] = {}
    for line in lines:
        for target in (bucket(line["staff_id"]), station):
            if line["kind"] == "fee":
                target["fees_taken_vnd"] += line["amount_vnd"]
            elif line["kind"] == "carried":
                target["carried_vnd"] += line["amount_vnd"]
            elif line["kind"] == "refund":
                target["refunds_vnd"] += line["amount_vnd"]
            else:
                target["reprints"] += 1
        if line["kind"] in ("fee", "refund"):
            taken_for[line["submission_id"]] = (taken_for.get(line["submission_id"], 0)
                                                + MONEY_IN[line["kind"]] * line["amount_vnd"])
    for target in (*by_staff.values(), station):
        target["cash_vnd"] = target["fees_taken_vnd"] - target["refunds_vnd"]
        target["fee_difference_vnd"] = target["cash_vnd"] - (target["fees_expected_vnd"]
                                                             - target["refunds_expected_vnd"])
    for item in corrections:
        sid = item.pop("submission_id")
        item["due_vnd"] = due_of.get(sid, 0)
        item["cash_vnd"] = taken_for.get(sid, 0)  # taken more (positive) or given back (negative)
    names = staff.display_names(conn)
    return {"day": day, "station": station, "by_staff": dict(sorted(by_staff.items())),
            "names": {who: names[who] for who in by_staff if who in names},
            "corrections": corrections, "late": late,
            "ratings": ratings.day_summary(conn, day)}


def _restored(report: dict) -> dict:
    """A report read back from its JSON as ``day_report`` made it: the ratings' levels are numbers again
    and their criteria in the order asked (JSON keeps neither)."""
    summary = report.get("ratings") or {}
    criteria = summary.get("criteria") or {}
    summary["criteria"] = {
        name: {**criteria[name], "levels": {int(k): v for k, v in criteria[name].get("levels", {}).items()},
               "shares": {int(k): v for k, v in criteria[name].get("shares", {}).items()}}
        for name in ratings.CRITERIA if name in criteria}
    report["ratings"] = {"ratings": 0, "by_moment": {}, **summary}
    return report


def signed_report(closing: sqlite3.Row) -> dict | None:
    """The report as it was signed, or None when its text no longer matches the hash stored with it (or
    is not a report): the page then says so and shows the live figures."""
    text = closing["report"]
    if hashlib.sha256(text.encode()).hexdigest() != closing["report_sha256"]:
        return None
    try:
        report = json.loads(text)
    except ValueError:
        return None
    if not isinstance(report, dict) or not isinstance(report.get("station"), dict):
        return None
    return _restored(report)


# --- money lines ------------------------------------------------------------------------------------

def record_fee(conn: sqlite3.Connection, submitted: dossiers.Submitted, staff_id: int, amount_vnd: int,
               actor: str) -> None:
    """A fee taken in cash for a dossier submitted at the counter, inside its submit transaction
    (``dossiers.submit(also_write=...)``), audited with the fee due (kiosk.core.fees, as the dossier keeps
    it: the end-of-day difference is what was taken less that)."""
    _record(conn, submitted.submitted_at.isoformat(timespec="seconds"), submitted.local_day, staff_id, "fee",
            submitted.submission_id, amount_vnd)
    due = submitted.fee.amount_vnd if submitted.fee is not None else None
    audit.append(conn, actor, "fee.taken", submitted.submission_id, {"amount_vnd": amount_vnd, "due_vnd": due})


def record_correction(conn: sqlite3.Connection, submitted: dossiers.Submitted, staff_id: int,
                      replaced_id: str, actor: str) -> dict:
    """A correction submitted at the counter, inside its submit transaction: what the citizen paid for
    the dossier it replaces (``held_for``) moves to it, a ``carried`` line naming both (written even for
    0 đ: the link), audited ``fee.carried``; when the correction's fee is lower, the difference is given
    back, a ``refund`` line audited ``fee.refunded``. Returns {"carried_vnd", "refund_vnd"}."""
    at = submitted.submitted_at.isoformat(timespec="seconds")
    held = held_for(conn, replaced_id)
    due = submitted.fee.amount_vnd if submitted.fee is not None else 0
    _record(conn, at, submitted.local_day, staff_id, "carried", submitted.submission_id, held, replaced_id)
    audit.append(conn, actor, "fee.carried", submitted.submission_id,
                 {"from": replaced_id, "amount_vnd": held, "due_vnd": due})
    refund = max(0, held - due)
    if refund:
        _record(conn, at, submitted.local_day, staff_id, "refund", submitted.submission_id, refund)
        audit.append(conn, actor, "fee.refunded", submitted.submission_id,
                     {"amount_vnd": refund, "due_vnd": due, "carried_vnd": held})
    return {"carried_vnd": held, "refund_vnd": refund}


def record_reprint(conn: sqlite3.Connection, at: str, local_day: str, staff_id: int, submission_id: str) -> None:
    """A receipt reprinted by staff, inside the caller's transaction."""
    _record(conn, at, local_day, staff_id, "reprint", submission_id, 0)


def _record(conn: sqlite3.Connection, at: str, local_day: str, staff_id: int, kind: str, submission_id: str,
            amount_vnd: int, from_submission_id: str | None = None) -> None:
    conn.execute("INSERT INTO ledger (at, local_day, staff_id, kind, submission_id, amount_vnd, from_submission_id) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (at, local_day, staff_id, kind, submission_id, amount_vnd, from_submission_id))


def ledger_of(conn: sqlite3.Connection, submission_id: str) -> list[sqlite3.Row]:
    """The ledger lines of one dossier, oldest first, each with the ``username`` of who wrote it and, for
    a carried line, the tracking code it was carried from (``from_code``)."""
    return conn.execute("SELECT l.*, s.username, f.tracking_code AS from_code FROM ledger l "
                        "JOIN staff s ON s.id = l.staff_id "
                        "LEFT JOIN dossiers f ON f.submission_id = l.from_submission_id "
                        "WHERE l.submission_id = ? ORDER BY l.id", (submission_id,)).fetchall()


def paid_for(conn: sqlite3.Connection, submission_id: str) -> int:
    """What the citizen has paid towards a dossier: the cash taken for it and what was carried to it from
    the dossier it corrects, less what was given back (the receipt's "paid")."""
    (paid,) = conn.execute("SELECT coalesce(sum(CASE kind WHEN 'fee' THEN amount_vnd WHEN 'carried' THEN amount_vnd "
                           "WHEN 'refund' THEN -amount_vnd ELSE 0 END), 0) FROM ledger WHERE submission_id = ?",
                           (submission_id,)).fetchone()
    return paid


def held_for(conn: sqlite3.Connection, submission_id: str) -> int:
    """What a dossier still holds of what was paid for it: ``paid_for`` less what a correction already
    carried away (a dossier corrected twice does not give its money twice)."""
    (gone,) = conn.execute("SELECT coalesce(sum(amount_vnd), 0) FROM ledger WHERE from_submission_id = ? "
                           "AND kind = 'carried'", (submission_id,)).fetchone()
    return paid_for(conn, submission_id) - gone


def paid_before(conn: sqlite3.Connection, replaced_id: str, limit: int = 20) -> dict:
    """What the finish page of a correction says of the money: ``held_vnd``, what the dossier it replaces
    holds (carried to the correction), and ``chain``, each dossier of the correction chain behind it
    (the one replaced, then the one that one replaced, ...), newest first, with ``tracking_code``,
    ``submitted_at`` and ``paid_vnd``, the cash taken for it less what was given back."""
    chain, seen, sid = [], set(), replaced_id
    while sid is not None and sid not in seen and len(chain) < limit:
        seen.add(sid)
        found = dossiers.tracking_code_and_time(conn, sid)
        if found is None:
            break
        lines = conn.execute("SELECT kind, amount_vnd, from_submission_id FROM ledger WHERE submission_id = ? "
                             "AND kind != 'reprint' ORDER BY id", (sid,)).fetchall()
        chain.append({"tracking_code": found["tracking_code"], "submitted_at": found["submitted_at"],
                      "paid_vnd": sum(MONEY_IN[line["kind"]] * line["amount_vnd"]
                                      for line in lines if line["kind"] != "carried")})
        sid = next((line["from_submission_id"] for line in lines if line["kind"] == "carried"), None)
    return {"held_vnd": held_for(conn, replaced_id), "chain": chain}


# --- signing off, reopening ---------------------------------------------------------------------------

def closing(conn: sqlite3.Connection, day: str) -> sqlite3.Row | None:
    """The day's active closing (signed and not reopened), or None."""
    return conn.execute("SELECT * FROM day_closings WHERE local_day = ? AND reopened_at IS NULL",
                        (day,)).fetchone()


def closings_of(conn: sqlite3.Connection, day: str) -> list[sqlite3.Row]:
    """Every closing of the day, oldest first, each with who signed and who reopened it (display names)."""
    return conn.execute("SELECT c.*, s.display_name AS signer, r.display_name AS reopener FROM day_closings c "
                        "JOIN staff s ON s.id = c.signed_by LEFT JOIN staff r ON r.id = c.reopened_by "
                        "WHERE c.local_day = ? ORDER BY c.id", (day,)).fetchall()


def sign_off(conn: sqlite3.Connection, day: str, supervisor: sqlite3.Row) -> dict:
    """Store the day's report as signed by ``supervisor``, with its hash. The report is made inside the
    write transaction, of what was written before the second of the signature; what is written from
    that second on goes to a later day (``home_day``). A day has one active closing at a time."""
    if supervisor["role"] != "supervisor":
        raise PermissionError("only a supervisor signs off a day")
    with write_transaction(conn):
        if closing(conn, day) is not None:
            raise ValueError(f"{day} is already signed off")
        signed_at = _now()
        report = day_report(conn, day, before=_second(signed_at))
        text = json.dumps(report, ensure_ascii=False, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()
        conn.execute("INSERT INTO day_closings (local_day, report, report_sha256, signed_by, signed_at) "
                     "VALUES (?, ?, ?, ?, ?)", (day, text, digest, supervisor["id"], signed_at))
        audit.append(conn, supervisor["username"], "day.signed_off", day, {"report_sha256": digest})
    return report


def reopen(conn: sqlite3.Connection, day: str, supervisor: sqlite3.Row, reason: str) -> str:
    """Reopen a signed day (``supervisor`` only, with a reason of 5 to 200 characters): the closing is
    kept, marked reopened, and audited ``day.reopened`` with the signed report's hash and the reason; the
    day's page is live again and the day can be signed again. What was written while it was signed stays
    in the later report it went to. Returns the reopened report's hash. Raises LookupError when the day
    is not signed."""
    if supervisor["role"] != "supervisor":
        raise PermissionError("only a supervisor reopens a day")
    reason = " ".join(reason.split())
    if not REOPEN_REASON_LENGTH[0] <= len(reason) <= REOPEN_REASON_LENGTH[1]:
        raise ValueError("a reason of 5 to 200 characters is needed")
    with write_transaction(conn):
        active = closing(conn, day)
        if active is None:
            raise LookupError(f"{day} is not signed off")
        conn.execute("UPDATE day_closings SET reopened_at = ?, reopened_by = ?, reopen_reason = ? WHERE id = ?",
                     (_now(), supervisor["id"], reason, active["id"]))
        audit.append(conn, supervisor["username"], "day.reopened", day,
                     {"report_sha256": active["report_sha256"], "reason": reason})
    return active["report_sha256"]
