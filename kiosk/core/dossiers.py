"""Submitting a dossier: one SQLite transaction writes the dossier, its outbox row and an audit event.

Once ``submit`` returns, the dossier survives a crash, a power cut (synchronous=FULL) or a week offline.
The draft it came from is deleted in the same transaction, so submitting twice cannot make two dossiers.

This module owns the ``dossiers`` and ``daily_sequence`` tables (``incarnations`` are kiosk/core/db.py's):
sync, the staff pages and the commands read and change them through its functions.
"""
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from . import audit, documents, drafts, fees, outbox, sealing, tracking_code
from .catalog import Procedure
from .masking import mask_name
from .db import begin_incarnation, incarnation, write_transaction

# The states a dossier moves through at the central, with the labels staff and citizens see.
CENTRAL_STATUSES = {
    "received": {"vi": "Đã tiếp nhận", "en": "Received"},
    "processing": {"vi": "Đang xử lý", "en": "Processing"},
    "needs_documents": {"vi": "Cần bổ sung giấy tờ", "en": "Needs documents"},
    "done": {"vi": "Đã có kết quả", "en": "Done"},
    "returned_by_post": {"vi": "Đã trả kết quả qua bưu điện", "en": "Returned by post"},
}


def canonical_json(document) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes signed, sent and hashed (the dossier's content hash too)."""
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


# Where a dossier is: queued here, then the central's states as its status feed reports them, or
# refused (quarantined at the station), then replaced when a correction (or the same dossier under a new
# tracking code) supersedes the refused one: the refusal is closed, its reason and history kept.
STATUSES = ("queued", *CENTRAL_STATUSES, "rejected", "replaced")


class AlreadyReplaced(Exception):
    """A dossier is superseded once: a second correction of it is refused. ``newest`` is the tracking code
    of the newest dossier in its line of corrections, the one to correct instead."""

    def __init__(self, newest: str):
        super().__init__(f"already replaced by {newest}")
        self.newest = newest


@dataclass(frozen=True)
class Submitted:
    submission_id: str
    tracking_code: str
    submitted_at: datetime
    local_day: str  # YYYY-MM-DD, the station's own day
    fee: fees.Fee | None = None  # the fee due, as stored with the dossier


def next_tracking_code(conn: sqlite3.Connection, station_id: str, local_day: str) -> str:
    conn.execute(
        "INSERT INTO daily_sequence (day, last) VALUES (?, 1) "
        "ON CONFLICT(day) DO UPDATE SET last = last + 1",
        (local_day,),
    )
    (sequence,) = conn.execute("SELECT last FROM daily_sequence WHERE day = ?", (local_day,)).fetchone()
    return tracking_code.make(station_id, local_day, sequence, incarnation(conn))


def _write(conn: sqlite3.Connection, key: bytes, document: dict, **row) -> None:
    """The dossier row for ``document`` (sealed, with the hash of its canonical bytes) and its outbox row,
    in the caller's transaction; ``row`` holds the columns that are not in the document."""
    sid = document["submission_id"]
    procedure = document["procedure"]
    conn.execute(
        "INSERT INTO dossiers (submission_id, tracking_code, station_id, channel, procedure_code, "
        "procedure_slug, procedure_version, submitted_at, payload_sealed, payload_sha256, supersedes, "
        "staff_id, local_day, fee_due_vnd, applicant_masked, fee_basis, catalog_release) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (sid, document["tracking_code"], document["station_id"], document["channel"], procedure["code"],
         procedure["slug"], procedure["version"], document["submitted_at"], sealing.seal(key, document, sid),
         hashlib.sha256(canonical_json(document)).hexdigest(), row["supersedes"], row["staff_id"],
         row["local_day"], row["fee_due_vnd"], row["applicant_masked"], row["fee_basis"],
         procedure.get("catalog_release")))
    outbox.enqueue(conn, sid, document["submitted_at"])


def applicant_answer(procedure: Procedure, answers: dict, source: str) -> str | None:
    """The applicant's own answer for a card field: the one the definition fills from the CCCD chip
    (``source`` such as ``card.full_name``), which is about the applicant, not a child or the deceased."""
    return next((str(answers[f["name"]]) for f in procedure.fields()
                 if f.get("prefill") == source and answers.get(f["name"])), None)


# The question a procedure asks to let the central tell the citizen of status changes (docs/sync.md,
# "Notifications"); the answers that mean yes.
NOTIFY_CONSENT = "notify_consent"
CONSENT_YES = (True, "yes", "co", "có")


def notify_contacts(procedure: Procedure, answers: dict) -> dict | None:
    """The dossier document's ``notify`` object, ``{"email", "sms", "consent": true}``, or None: only when
    the procedure asks ``notify_consent`` and the citizen answered yes, with the first answered field of type
    email and of type phone (the applicant's own, ``applicant_*``, before any other); no consent question,
    no consent or no address, no notification."""
    fields = procedure.fields()
    if not any(f["name"] == NOTIFY_CONSENT for f in fields) or answers.get(NOTIFY_CONSENT) not in CONSENT_YES:
        return None

    def first(kind: str) -> str | None:
        names = [f["name"] for f in fields if f.get("type") == kind and answers.get(f["name"])]
        names.sort(key=lambda name: not name.startswith("applicant_"))  # stable: the applicant's first
        return str(answers[names[0]]) if names else None

    email, sms = first("email"), first("phone")
    if not email and not sms:
        return None
    return {"email": email, "sms": sms, "consent": True}


def submit(conn: sqlite3.Connection, *, key: bytes, station: dict, channel: str, procedure: Procedure,
           answers: dict, draft_id: str | None = None, supersedes: str | None = None,
           actor: str = "citizen", staff_id: int | None = None, counter: dict | None = None,
           fee_ground: fees.StaffGround | None = None, not_applicable: set[str] = frozenset(),
           also_write: Callable[[sqlite3.Connection, Submitted], None] | None = None) -> Submitted | None:
    """Write the dossier. Returns None when ``draft_id`` names a draft that no longer exists, which is
    what a second press of the submit button (or a replayed request) finds.

    The fee due is ``fees.fee_for(procedure, answers, channel, fee_ground)``, worked out here once and
    kept with the dossier (``fee_due_vnd``, ``fee_basis``, and the sealed document's ``fee``); a
    reduction or exemption staff recorded (``fee_ground``) is audited under ``actor``.

    At a counter, ``counter`` (documents checked, delivery by post, the citizen's consent as recorded
    by staff) goes into the dossier; ``also_write(conn, submitted)`` writes the caller's own rows in the
    same transaction (the counter's ledger takes the fee paid in cash: agent/report.py owns that table).

    The draft's captured papers become one PDF each (kiosk/core/documents.py), written in the same
    transaction and named with their hashes under the document's ``attachments`` (a correction keeps the
    PDFs of the dossier it replaces where it captured nothing new); ``not_applicable`` lists the optional
    papers the citizen said they do not have.
    """
    now = datetime.now(timezone.utc)
    local_date = now.astimezone(ZoneInfo(station["timezone"])).date()
    local_day = local_date.strftime("%y%m%d")
    submission_id = str(uuid.uuid4())
    fee = fees.fee_for(procedure, answers, channel, fee_ground)
    with write_transaction(conn):
        built = (documents.assemble(conn, key, draft_id, procedure, set(not_applicable), carry_from=supersedes)
                 if draft_id is not None else [])
        if draft_id is not None and not drafts.take(conn, draft_id):
            return None
        if supersedes is not None and (newest := replaced_by(conn, supersedes)) is not None:
            raise AlreadyReplaced(newest)  # rolls back: the draft stays, nothing is written
        code = next_tracking_code(conn, station["id"], local_day)
        document = {
            "submission_id": submission_id,
            "tracking_code": code,
            "station_id": station["id"],
            "channel": channel,
            "procedure": {"code": procedure.code, "slug": procedure.slug, "version": procedure.version},
            "submitted_at": now.isoformat(timespec="seconds"),
            "answers": answers,
            "supersedes": supersedes,
            "fee": fee.basis(),
        }
        if procedure.release is not None:  # the catalog release it was made with (None: paths.procedures)
            document["procedure"]["catalog_release"] = procedure.release
        if counter is not None:
            document["counter"] = counter
        if built:
            document["attachments"] = [item.attachment() for item in built]
        if not_applicable:
            document["documents_not_applicable"] = sorted(not_applicable)
        notify = notify_contacts(procedure, answers)
        if notify is not None:
            document["notify"] = notify
        name = applicant_answer(procedure, answers, "card.full_name")
        _write(conn, key, document, supersedes=supersedes, staff_id=staff_id, local_day=local_date.isoformat(),
               fee_due_vnd=fee.amount_vnd, applicant_masked=mask_name(name) if name else None,
               fee_basis=json.dumps(fee.basis(sealed=False), ensure_ascii=False, sort_keys=True))
        documents.keep(conn, key, submission_id, built)
        audit.append(conn, actor, "dossier.submitted", submission_id,
                     {"tracking_code": code, "procedure": procedure.code, "channel": channel,
                      "fee_vnd": fee.amount_vnd})
        if supersedes is not None:
            _close_refusal(conn, supersedes, code, actor)
        if fee_ground is not None and fee.kind is not None:  # recorded by staff: who, which ground, how much
            audit.append(conn, actor, f"fee.{fee.kind}", submission_id,
                         {"ground": fee.ground, "standard_vnd": fee.standard_vnd, "amount_vnd": fee.amount_vnd})
        submitted = Submitted(submission_id, code, now, local_date.isoformat(), fee)
        if also_write is not None:
            also_write(conn, submitted)
    return submitted


def reissue_with_new_code(conn: sqlite3.Connection, key: bytes, submission_id: str) -> str | None:
    """The central already holds another dossier of this station under this dossier's tracking code: the
    station issued it twice (restored from a backup, or reinstalled under the same id). In one transaction:
    a new incarnation (when the taken code is of the current one, so later codes cannot collide again), a
    new dossier with the same answers under a new tracking code and submission id, pointing back to this
    one (``supersedes``), queued to send; this one refused with the new code as its reason, and 'replaced'.
    Returns the new tracking code, or None when the payload is gone (then it is only refused, for staff) or
    a correction already supersedes it (that one carries the answers on: a dossier is superseded once)."""
    with write_transaction(conn):
        old = conn.execute("SELECT * FROM dossiers WHERE submission_id = ?", (submission_id,)).fetchone()
        document = sealing.open_sealed(key, old["payload_sealed"], submission_id) if old["payload_sealed"] else None
        new_code = None
        corrected = replaced_by(conn, submission_id)  # a correction already carries its answers on
        if document is not None and corrected is None:
            if tracking_code.incarnation_of(old["tracking_code"]) == incarnation(conn):
                begin_incarnation(conn, "tracking_code_taken")
            day = old["tracking_code"].split("-")[1]
            new_code = next_tracking_code(conn, old["station_id"], day)
            new_id = str(uuid.uuid4())
            document = {**document, "submission_id": new_id, "tracking_code": new_code,
                        "reissued_from": old["tracking_code"]}
            _write(conn, key, document, supersedes=submission_id, staff_id=old["staff_id"],
                   local_day=old["local_day"], fee_due_vnd=old["fee_due_vnd"],
                   applicant_masked=old["applicant_masked"], fee_basis=old["fee_basis"])
            documents.copy_to_new_dossier(conn, key, submission_id, new_id)
            audit.append(conn, "sync", "dossier.reissued", new_id,
                         {"tracking_code": new_code, "from": old["tracking_code"]})
        if new_code:
            reason = f"tracking_code_taken: gửi lại với mã mới {new_code} / sent again as {new_code}"
        elif corrected:
            reason = (f"tracking_code_taken: đã có hồ sơ sửa đổi {corrected} / "
                      f"already corrected by {corrected}")
        else:
            reason = "tracking_code_taken: mã tra cứu đã được dùng / the tracking code was used before"
        outbox.withdraw(conn, submission_id, reason)
        mark_rejected(conn, submission_id)  # 'replaced' when sent again under a new code, or corrected
        audit.append(conn, "sync", "dossier.rejected", submission_id, {"code": "tracking_code_taken"})
    return new_code


def find_by_tracking_code(conn: sqlite3.Connection, text: str) -> sqlite3.Row | None:
    code = tracking_code.compact(text)
    return conn.execute(
        "SELECT * FROM dossiers WHERE replace(tracking_code, '-', '') = ?", (code,)
    ).fetchone()


def replaced_by(conn: sqlite3.Connection, submission_id: str) -> str | None:
    """The tracking code of the newest dossier in this one's line of replacements (a correction, or the
    same dossier reissued under a new code, and whatever replaced that in turn), or None when nothing
    supersedes it."""
    newest, current = None, submission_id
    for _ in range(1000):  # bounded: a line of corrections, never a cycle (supersedes names an older dossier)
        row = conn.execute("SELECT submission_id, tracking_code FROM dossiers WHERE supersedes = ? "
                           "ORDER BY submitted_at DESC, rowid DESC LIMIT 1", (current,)).fetchone()
        if row is None:
            break
        newest, current = row["tracking_code"], row["submission_id"]
    return newest


def _close_refusal(conn: sqlite3.Connection, submission_id: str, by_code: str, actor: str) -> None:
    """A dossier that supersedes a refused one closes the refusal, in the caller's transaction: the refused
    dossier is 'replaced' (its outbox row, reason and events stay as they were), audited with the new code."""
    if conn.execute("UPDATE dossiers SET status = 'replaced' WHERE submission_id = ? AND status = 'rejected'",
                    (submission_id,)).rowcount:
        audit.append(conn, actor, "dossier.replaced", submission_id, {"by": by_code})


def open_payload(conn: sqlite3.Connection, key: bytes, submission_id: str) -> dict | None:
    """The full dossier document, or None once it has been purged after acknowledgement."""
    row = conn.execute("SELECT payload_sealed FROM dossiers WHERE submission_id = ?", (submission_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    return sealing.open_sealed(key, row[0], submission_id)


def tracking_code_of(conn: sqlite3.Connection, submission_id: str) -> sqlite3.Row | None:
    """The row (``tracking_code``) of a dossier, or None."""
    return conn.execute("SELECT tracking_code FROM dossiers WHERE submission_id = ?", (submission_id,)).fetchone()


def tracking_code_and_time(conn: sqlite3.Connection, submission_id: str) -> sqlite3.Row | None:
    """(``tracking_code``, ``submitted_at``) of a dossier, for its receipt."""
    return conn.execute("SELECT tracking_code, submitted_at FROM dossiers WHERE submission_id = ?",
                        (submission_id,)).fetchone()


def fee_of(conn: sqlite3.Connection, submission_id: str) -> tuple[int, dict | None] | None:
    """(fee due, how it was worked out) of a dossier, as stored at submit (kiosk.core.fees ``basis``;
    None for a dossier made before the basis was kept), or None when there is no such dossier."""
    row = conn.execute("SELECT fee_due_vnd, fee_basis FROM dossiers WHERE submission_id = ?",
                       (submission_id,)).fetchone()
    if row is None:
        return None
    return row["fee_due_vnd"], json.loads(row["fee_basis"]) if row["fee_basis"] else None


def payload_sha256(conn: sqlite3.Connection, submission_id: str) -> str | None:
    """The content hash of a dossier, or None when this station has no such dossier."""
    row = conn.execute("SELECT payload_sha256 FROM dossiers WHERE submission_id = ?", (submission_id,)).fetchone()
    return row[0] if row else None


def corrected_by(conn: sqlite3.Connection, submission_id: str) -> list[str]:
    """The tracking codes of every dossier that supersedes this one."""
    return [r[0] for r in conn.execute("SELECT tracking_code FROM dossiers WHERE supersedes = ?",
                                       (submission_id,)).fetchall()]


# A name's match: the masked form whole (``_NAME_EXACT``), or a start as typed (``_NAME_START``, LIKE's
# comparison: ASCII letters in either case). Each is a range on ``dossiers_applicant`` (NOCASE, as LIKE
# compares), the exact test after it.
_NAME_EXACT = "applicant_masked = :masked COLLATE NOCASE AND applicant_masked = :masked"
_NAME_START = ("applicant_masked >= :start COLLATE NOCASE AND applicant_masked < :end COLLATE NOCASE "
               "AND applicant_masked LIKE :pattern ESCAPE '\\'")
SEARCH_SORTED_MIN = 500  # a start's matches sorted at least up to this many; beyond, newest first by time


def search_masked_name(conn: sqlite3.Connection, text: str, limit: int = 50) -> list[sqlite3.Row]:
    """Dossiers whose applicant's masked name is the masked form of ``text``, or starts with ``text`` as
    typed (names are sealed: staff find a dossier by the masked form), newest first (the first submitted
    first among those of the same second).

    Never a read of every dossier. The masked form whole: its newest, in the order of ``dossiers_applicant``
    (name, then time). A start: its matches counted along that index up to a bound and, when no more, sorted
    (the index alone); a start so common that more match (a family name alone) is found walking
    ``dossiers_submitted`` from the newest, where its matches are dense. The bound, sqrt(limit x
    dossiers), keeps the two ways near their least. The newest ``limit`` of both, then their rows."""
    params = {"start": text, "end": text + "\U0010ffff", "masked": mask_name(text),
              "pattern": text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",
              "limit": limit}
    (last,) = conn.execute("SELECT coalesce(MAX(rowid), 0) FROM dossiers").fetchone()
    params["bound"] = bound = max(SEARCH_SORTED_MIN, int((limit * last) ** 0.5))
    found = conn.execute(f"SELECT rowid, submitted_at FROM dossiers WHERE {_NAME_EXACT} "
                         f"ORDER BY submitted_at DESC, rowid LIMIT :limit", params).fetchall()
    (starting,) = conn.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM dossiers WHERE {_NAME_START} "
                               f"LIMIT :bound + 1)", params).fetchone()
    along = "" if starting <= bound else "INDEXED BY dossiers_submitted "
    found += conn.execute(f"SELECT rowid, submitted_at FROM dossiers {along}WHERE {_NAME_START} "
                          f"ORDER BY submitted_at DESC, rowid LIMIT :limit", params).fetchall()
    newest = sorted({(at, rowid) for rowid, at in found}, key=lambda e: (_descending(e[0]), e[1]))[:limit]
    if not newest:
        return []
    marks = ",".join("?" * len(newest))
    return conn.execute(f"SELECT * FROM dossiers WHERE rowid IN ({marks}) ORDER BY submitted_at DESC, rowid",
                        [rowid for _at, rowid in newest]).fetchall()


def _descending(text: str) -> tuple:
    """A sort key that orders strings as SQLite's BINARY collation does, backwards."""
    return tuple(-b for b in text.encode()) + (1,)


def recent(conn: sqlite3.Connection, local_day: str, limit: int = 20) -> list[sqlite3.Row]:
    """The dossiers of a local day (YYYY-MM-DD), newest first, each with its outbox state (``sync_state``)."""
    return conn.execute(
        "SELECT d.*, o.state AS sync_state FROM dossiers d JOIN outbox o USING (submission_id) "
        "WHERE d.local_day = ? ORDER BY d.submitted_at DESC LIMIT ?", (local_day, limit)).fetchall()


def of_day(conn: sqlite3.Connection, local_day: str, made_from: str = "",
           made_before: str | None = None) -> sqlite3.Cursor:
    """The dossiers of a local day for its report (submission id, tracking code, time, staff, procedure,
    fee due, the dossier it supersedes and the outbox ``state``), oldest first; with ``made_from`` and
    ``made_before`` (UTC, ``YYYY-MM-DDTHH:MM:SS``), only those submitted in that span, to the second."""
    return conn.execute(
        "SELECT d.submission_id, d.tracking_code, d.submitted_at, d.staff_id, d.procedure_code, d.fee_due_vnd, "
        "d.supersedes, o.state FROM dossiers d JOIN outbox o USING (submission_id) WHERE d.local_day = ? "
        "AND substr(d.submitted_at, 1, 19) >= ? AND (? IS NULL OR substr(d.submitted_at, 1, 19) < ?) "
        "ORDER BY d.submitted_at, d.tracking_code", (local_day, made_from, made_before, made_before))


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM dossiers").fetchone()[0]


def purged_count(conn: sqlite3.Connection) -> int:
    """How many dossiers have had their payload purged."""
    return conn.execute("SELECT COUNT(*) FROM dossiers WHERE payload_sealed IS NULL").fetchone()[0]


def one_sealed_payload(conn: sqlite3.Connection) -> tuple | None:
    """(submission id, sealed payload) of any dossier that still has one, to try a key on."""
    return conn.execute("SELECT submission_id, payload_sealed FROM dossiers WHERE payload_sealed IS NOT NULL "
                        "LIMIT 1").fetchone()


# -- what sync and purge change, each inside the caller's transaction ---------------------------------------

def record_central_code(conn: sqlite3.Connection, submission_id: str, central_code: str) -> str | None:
    """The central acknowledged the dossier under ``central_code`` (mã hồ sơ): keep it, and the dossier
    is received unless the central has told more already. Returns the code it held before (None if none)."""
    (before,) = conn.execute("SELECT central_code FROM dossiers WHERE submission_id = ?",
                             (submission_id,)).fetchone()
    conn.execute("UPDATE dossiers SET central_code = ?, status = CASE WHEN status IN ('queued', 'rejected') "
                 "THEN 'received' ELSE status END WHERE submission_id = ?", (central_code, submission_id))
    return before


def mark_rejected(conn: sqlite3.Connection, submission_id: str) -> None:
    """Refused: 'rejected', or 'replaced' when a dossier already supersedes it (a correction made while it
    waited), so its refusal is closed from the start."""
    conn.execute("UPDATE dossiers SET status = CASE WHEN EXISTS (SELECT 1 FROM dossiers s WHERE s.supersedes = "
                 "dossiers.submission_id) THEN 'replaced' ELSE 'rejected' END WHERE submission_id = ?",
                 (submission_id,))


def apply_status(conn: sqlite3.Connection, submission_id: str, station_id: str, status: str,
                 central_code: str | None) -> bool:
    """A status the central's feed reports for one of this station's dossiers (its code too, if none is
    held yet); False when the dossier is not this station's or already has that status."""
    return conn.execute(
        "UPDATE dossiers SET status = ?, central_code = coalesce(central_code, ?) "
        "WHERE submission_id = ? AND station_id = ? AND status != ?",
        (status, central_code, submission_id, station_id, status)).rowcount > 0


def purge_payload(conn: sqlite3.Connection, submission_id: str) -> None:
    """Drop the sealed personal data (its documents' PDFs too); the row, its hash and codes stay."""
    conn.execute("UPDATE dossiers SET payload_sealed = NULL WHERE submission_id = ?", (submission_id,))
    documents.purge(conn, submission_id)
