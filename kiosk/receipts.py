"""Receipts for submitted dossiers: printed in the background after the submit has committed, each
attempt recorded, and the same receipt as a PNG for the screen when the printer cannot print.

The web request never waits on the printer: a single printing thread per station process takes jobs in
order (one printer, one job at a time), and the confirmation page asks how the job went. The queue keeps
what the printer's last job left behind: after a job that was cut off, the next one starts with a reset,
a feed and a cut. A request may carry a key (a staff reprint does): a second request with the same key
is the same request, recorded and printed once. Recording comes after the dossier's commit: when the
disk cannot take a record, the job is printed all the same and its record waits in memory (issue 21).
"""
import logging
import sqlite3
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from devices.printer import (PAPER_WIDTH_PX, PrintOutcome, PrinterSettingsError, Status, print_image, printer_settings,
                             printer_status, usable_settings)
from devices.vietqr import PaymentAccount, payment_account

from agent import report, staff

from .core import audit, dossiers
from .core.calendar import WorkCalendar
from .core.masking import mask_id, mask_name
from .core.catalog import Procedure
from .core.db import connect, storage_problem, write_transaction
from .receipt_document import DrawnReceipt, Receipt, draw_receipt, png_bytes

log = logging.getLogger(__name__)
_STATUS_BY_CODE = {status.code: status for status in Status}


# The kiosk's own words for how the result is returned (a procedure's "delivery" question).
_BY_POST = {"buu-chinh", "post"}


def _delivery(procedure: Procedure, document: dict | None) -> str | None:
    """How the result is returned: "post" or "in_person", from the counter's record or the citizen's
    answer; in person when the procedure offers no other way; None when the dossier's payload is gone."""
    if document is None:
        return None
    counter = document.get("counter")
    if counter is not None:
        return "post" if (counter.get("delivery") or {}).get("method") == "post" else "in_person"
    offered = any(f["name"] == "delivery" for f in procedure.fields())
    return "post" if offered and document["answers"].get("delivery") in _BY_POST else "in_person"


def receipt_for(conn: sqlite3.Connection, key: bytes, config: dict, procedure: Procedure,
                submission_id: str, tracking_url: str, calendar: WorkCalendar) -> Receipt:
    """The receipt of a submitted dossier, from the dossier itself (its row, its sealed payload while it is
    kept), the counter's ledger and staff list, and the station's settings and working-day ``calendar``
    (the app's). Names and numbers masked."""
    row = dossiers.tracking_code_and_time(conn, submission_id)
    dossier = dossiers.find_by_tracking_code(conn, row["tracking_code"])
    document = dossiers.open_payload(conn, key, submission_id)
    answers = (document or {}).get("answers", {})
    counter = (document or {}).get("counter")
    station = config["station"]
    name = dossiers.applicant_answer(procedure, answers, "card.full_name")
    officer = staff.display_name_of(conn, dossier["staff_id"]) if dossier["staff_id"] is not None else None
    paid = report.paid_for(conn, submission_id)  # a correction: what was carried to it counts as paid
    return Receipt(
        station_name=station["name"], agency=station["agency"], procedure_name=procedure.name["vi"],
        procedure_code=procedure.code,
        applicant_masked=mask_name(name) if name else dossier["applicant_masked"],
        id_masked=mask_id(dossiers.applicant_answer(procedure, answers, "card.id_number")),
        submitted_at=datetime.fromisoformat(row["submitted_at"]), processing_days=procedure.processing_days,
        fee_vnd=dossier["fee_due_vnd"], tracking_code=row["tracking_code"], tracking_url=tracking_url,
        timezone=station["timezone"], competent_agency=procedure.agency["vi"],
        central_code=dossier["central_code"] or None,
        documents=tuple((counter or {}).get("documents_checked", ())),
        documents_declared=document is not None and counter is None,
        delivery=_delivery(procedure, document), result_address=station.get("result_address", ""),
        fee_paid_vnd=paid, officer=officer["display_name"] if officer else None,
        hotline=station.get("hotline", ""), calendar=calendar,
    )


def _usable_payment(config: Mapping, payment: PaymentAccount | Mapping | None) -> PaymentAccount | None:
    """The account for the payment QR: the one given, else the station's; ``None`` if it is unusable,
    because a wrong bank number must not keep receipts from printing (it is logged instead)."""
    try:
        if payment is None:
            return payment_account(config)
        if isinstance(payment, Mapping):
            return payment_account({"payment": payment})
        payment.payload(1000, "check")
        return payment
    except (ValueError, TypeError, AttributeError) as exc:
        log.error("payment account unusable, receipt printed without the payment QR: %s", exc)
        return None


def print_receipt(config: Mapping, receipt: Receipt, payment: PaymentAccount | Mapping | None = None,
                  recover: bool = False) -> PrintOutcome:
    """Print the receipt for a submitted dossier: composed as an image as wide as the station's paper, then
    printed by devices.printer.print_image. Never raises for device trouble.

    ``payment`` defaults to the station's ``[payment]`` account; the fee's VietQR is printed only when
    there is one and the fee is not 0 (an unusable account is logged and left out). The outcome is codes;
    kiosk.device_words.print_outcome says it.
    """
    settings, refusal = usable_settings(config)
    if refusal is not None:
        return refusal
    image = compose(config, receipt, payment, settings.width_px).image
    # recover: the printer's last job was cut off; this one starts with a reset, a feed and a cut.
    return print_image(config, image, label=f"receipt {receipt.tracking_code}", recover=recover)


def paper_width_px(config: Mapping) -> int:
    """The station's paper width in dots: its printer's, or 80 mm when it has none (or its printer
    settings are wrong, which the start checks and the printing job report)."""
    try:
        settings = printer_settings(config)
    except PrinterSettingsError:
        return PAPER_WIDTH_PX[80]
    return PAPER_WIDTH_PX[80] if settings.connection == "none" else settings.width_px


def compose(config: Mapping, receipt: Receipt, payment: PaymentAccount | Mapping | None = None,
            width_px: int | None = None) -> DrawnReceipt:
    """The one composition of a receipt, for the paper and for the screen alike: as wide as the station's
    paper (``width_px`` if given), with the VietQR of the station's payment account (``payment`` if
    given) when a fee is still to be paid."""
    return draw_receipt(receipt, width_px or paper_width_px(config), _usable_payment(config, payment))


def on_screen_png(config: Mapping, receipt: Receipt) -> bytes:
    """The receipt as the screen shows it: the very picture the printer is given, as a PNG."""
    return png_bytes(compose(config, receipt).image)


def record_request(conn: sqlite3.Connection, submission_id: str, actor: str, key: str | None = None,
                   printing: bool = True) -> int | None:
    """Record a request to print a dossier's receipt, inside the caller's transaction; its job id, or
    ``None`` when ``key`` was already used (a replayed or double-clicked request: nothing is recorded).
    Without a printer (``printing`` false) the request is recorded as finished, with ``no_printer``."""
    now = datetime.now(timezone.utc).isoformat()
    finished_at, status, ok = (None, "pending", None) if printing else (now, Status.NO_PRINTER.code, 0)
    cursor = conn.execute(
        "INSERT OR IGNORE INTO receipt_prints (submission_id, requested_at, requested_by, request_key, "
        "finished_at, status, ok) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (submission_id, now, actor, key, finished_at, status, ok))
    return cursor.lastrowid if cursor.rowcount else None


@dataclass
class _Unwritten:
    """A print job whose record the station could not write (its disk was full): kept in memory, in order,
    and written when the disk takes it again. ``job`` is its row when the request itself was recorded;
    ``status`` is None until the printer has answered."""
    submission_id: str
    actor: str
    requested_at: str
    job: int | None = None
    status: str | None = None
    ok: bool = False
    finished_at: str | None = None
    details: dict = field(default_factory=dict)


class ReceiptPrinter:
    """The station's printing queue. ``request`` records the job and returns at once.

    ``needs_recovery`` is this printer's state between jobs: true after a job was cut off on its way (the
    connection dropped, or the printer never confirmed it), until a job with the recovery in front (a
    reset, a feed and a cut) has reached it. Only the printing thread changes it.

    Recording a job comes after the dossier's commit, so it must never undo what the citizen is told: when
    the database cannot be written (a full disk), the job is printed all the same, its record is kept in
    memory (``latest`` answers from there), the cause is logged once per episode, and the printing thread
    writes the records again with a backoff (``retry_first_s`` doubling up to ``retry_cap_s``) until the
    disk takes them. A record is never left "pending" for ever without a log line."""

    retry_first_s = 1.0
    retry_cap_s = 60.0

    def __init__(self, database: str, config: dict, enabled: bool):
        self.database = database
        self.config = config
        self.enabled = enabled  # False: the station has no printer, receipts are shown on screen
        self.needs_recovery = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receipt-printer")
        self._lock = threading.Lock()
        self._unwritten: list[_Unwritten] = []  # oldest first
        self._trouble: str | None = None        # the storage problem of this episode, logged once
        self._retry: threading.Timer | None = None
        self._retry_s = self.retry_first_s
        self.on_status = None  # called with each job's status code (kiosk/device_state.py's DeviceWatch.printed)

    def ask_status(self, timeout: float = 120.0) -> str | None:
        """The printer's status code, asked on the printing thread between jobs (a status query on a second
        connection in the middle of a job would cut it); ``no_printer`` without one; None when the queue
        stays busy past ``timeout``."""
        if not self.enabled:
            return Status.NO_PRINTER.code
        future = self._pool.submit(printer_status, self.config)
        try:
            return future.result(timeout).code
        except Exception:  # noqa: BLE001  (busy past the timeout, or the pool is shutting down)
            return None

    def request(self, conn: sqlite3.Connection, receipt: Receipt, submission_id: str, actor: str) -> int | None:
        """Record the job and queue it; its id, or None when it could not be recorded yet (printed all the
        same, recorded later). Never raises for the database: the dossier is already committed."""
        entry = _Unwritten(submission_id, actor, datetime.now(timezone.utc).isoformat())
        try:
            with write_transaction(conn):
                job = record_request(conn, submission_id, actor)
        except sqlite3.Error as exc:
            self._hold(entry, exc)
            self._pool.submit(self._print, None, receipt, submission_id, actor, entry)
            return None
        self.queue(job, receipt, submission_id, actor)
        return job

    def queue(self, job: int, receipt: Receipt, submission_id: str, actor: str) -> None:
        """Print a job already recorded (``record_request``, committed) in the background."""
        self._pool.submit(self._print, job, receipt, submission_id, actor)

    def _print(self, job: int | None, receipt: Receipt, submission_id: str, actor: str,
               entry: _Unwritten | None = None) -> None:
        recover = self.needs_recovery
        details = {"job": job} if job is not None else {}
        try:
            outcome = print_receipt(self.config, receipt, recover=recover)
            status, ok = outcome.status.code, outcome.ok
            if outcome.interrupted:
                self.needs_recovery = True
                details["interrupted"] = True
            elif outcome.sent:  # the whole job went through, the recovery in front of it
                self.needs_recovery = False
            if recover and outcome.sent:
                details["recovery"] = True
        except Exception as exc:  # a bug must not leave the job "pending" for ever
            log.error("printing failed with %s", type(exc).__name__)
            status, ok = Status.OFFLINE.code, False
        if self.on_status is not None:
            try:
                self.on_status(status)
            except Exception:  # noqa: BLE001  (the device state is news for the fleet page, never a job's fate)
                log.warning("device state not updated after a print job")
        finished = datetime.now(timezone.utc).isoformat()
        with self._lock:
            if entry is None:
                entry = _Unwritten(submission_id, actor, finished, job)
            entry.status, entry.ok, entry.finished_at, entry.details = status, bool(ok), finished, details
            if entry not in self._unwritten:
                self._unwritten.append(entry)
        self._write_unwritten()

    def _write(self, entry: _Unwritten) -> None:
        conn = connect(self.database)
        try:
            with write_transaction(conn):
                job, details = entry.job, entry.details
                if job is None:  # the request itself could not be recorded at the time
                    job = record_request(conn, entry.submission_id, entry.actor)
                    conn.execute("UPDATE receipt_prints SET requested_at = ? WHERE id = ?", (entry.requested_at, job))
                    details = {**details, "job": job, "recorded_late": True}
                conn.execute("UPDATE receipt_prints SET finished_at = ?, status = ?, ok = ? WHERE id = ?",
                             (entry.finished_at, entry.status, int(entry.ok), job))
                audit.append(conn, entry.actor, "receipt.printed" if entry.ok else "receipt.not_printed",
                             entry.submission_id, {**details, "status": entry.status})
        finally:
            conn.close()

    def _write_unwritten(self) -> None:
        """Write the finished jobs' records, oldest first; on a storage error keep them and try again later.
        Runs on the printing thread only, so records are written in the order the jobs were printed."""
        while True:
            with self._lock:
                ready = next((e for e in self._unwritten if e.status is not None), None)
            if ready is None:
                break
            try:
                self._write(ready)
            except Exception as exc:  # noqa: BLE001 - a record that cannot be written waits, the thread lives on
                self._hold(ready, exc)
                return
            with self._lock:
                self._unwritten.remove(ready)
        with self._lock:
            if self._trouble is not None and not self._unwritten:
                log.warning("receipt records written again (it was: %s)", self._trouble)
                self._trouble, self._retry_s = None, self.retry_first_s

    def _hold(self, entry: _Unwritten, exc: BaseException) -> None:
        """Keep ``entry`` in memory, log the cause once per episode, and try again after a backoff."""
        cause = storage_problem(exc) or f"{type(exc).__name__} writing the database: {str(exc)[:120]}"
        with self._lock:
            if entry not in self._unwritten:
                self._unwritten.append(entry)
            if cause != self._trouble:
                log.error("receipt records cannot be written: %s; %d job(s) kept in memory, written when the "
                          "database takes them again", cause, len(self._unwritten))
                self._trouble = cause
            if self._retry is None or not self._retry.is_alive():
                self._retry = threading.Timer(self._retry_s, self._retry_later)
                self._retry.daemon = True
                self._retry.start()
                self._retry_s = min(self.retry_cap_s, self._retry_s * 2)

    def _retry_later(self) -> None:
        with self._lock:
            self._retry = None
        try:
            self._pool.submit(self._write_unwritten)
        except RuntimeError:  # the pool was shut down: the process is ending
            pass

    def latest(self, conn: sqlite3.Connection, submission_id: str) -> dict | None:
        """``latest_print``, with the jobs whose record is still in memory (a full disk) counted first."""
        with self._lock:
            held = [e for e in self._unwritten if e.submission_id == submission_id]
        if held:
            entry = held[-1]
            if entry.status is None:
                return {"state": "pending", "status": None}
            return {"state": "printed" if entry.ok else "failed", "status": _STATUS_BY_CODE.get(entry.status)}
        return latest_print(conn, submission_id)

    def unwritten(self) -> int:
        """How many jobs' records wait in memory for the disk."""
        with self._lock:
            return len(self._unwritten)

    def wait(self, timeout: float = 30) -> None:
        """Let queued jobs finish, and try once more to write what waits in memory (tests and shutdown)."""
        self._pool.submit(self._write_unwritten).result(timeout)


def prints_of(conn: sqlite3.Connection, submission_id: str) -> list[sqlite3.Row]:
    """Every print job of a dossier, oldest first, with who asked for it (``who``)."""
    return conn.execute("SELECT *, requested_by AS who FROM receipt_prints WHERE submission_id = ? ORDER BY id",
                        (submission_id,)).fetchall()


def latest_print(conn: sqlite3.Connection, submission_id: str) -> dict | None:
    """How the last print of this dossier went: ``state`` is pending, printed or failed, with the
    printer's Status for a failure (its words: printer_status_<code>)."""
    row = conn.execute("SELECT * FROM receipt_prints WHERE submission_id = ? ORDER BY id DESC LIMIT 1",
                       (submission_id,)).fetchone()
    if row is None:
        return None
    if row["finished_at"] is None:
        return {"state": "pending", "status": None}
    return {"state": "printed" if row["ok"] else "failed", "status": _STATUS_BY_CODE.get(row["status"])}
