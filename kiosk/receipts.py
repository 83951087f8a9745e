"""Receipts for submitted dossiers: printed in the background after the submit has committed, each
attempt recorded, and the same receipt as a PNG for the screen when the printer cannot print.

The web request never waits on the printer: a single printing thread per station process takes jobs in
order (one printer, one job at a time), and the confirmation page asks how the job went.
"""
import logging
import sqlite3
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from devices.printer import PrintOutcome, Status, print_image, usable_settings
from devices.vietqr import PaymentAccount, payment_account

from .core import audit, dossiers
from .core.masking import mask_id, mask_name
from .core.catalog import Procedure
from .core.db import connect, write_transaction
from .receipt_document import Receipt, render_receipt_image

log = logging.getLogger(__name__)
_STATUS_BY_CODE = {status.code: status for status in Status}


def receipt_for(conn: sqlite3.Connection, key: bytes, config: dict, procedure: Procedure,
                submission_id: str, tracking_url: str) -> Receipt:
    row = dossiers.tracking_code_and_time(conn, submission_id)
    document = dossiers.open_payload(conn, key, submission_id) or {"answers": {}}
    answers = document["answers"]
    station = config["station"]
    return Receipt(
        station_name=station["name"], agency=procedure.agency["vi"], procedure_name=procedure.name["vi"],
        procedure_code=procedure.code,
        applicant_masked=mask_name(dossiers.applicant_answer(procedure, answers, "card.full_name")),
        id_masked=mask_id(dossiers.applicant_answer(procedure, answers, "card.id_number")),
        submitted_at=datetime.fromisoformat(row["submitted_at"]), processing_days=procedure.processing_days,
        fee_vnd=procedure.fee_vnd, tracking_code=row["tracking_code"], tracking_url=tracking_url,
        timezone=station["timezone"],
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


def print_receipt(config: Mapping, receipt: Receipt, payment: PaymentAccount | Mapping | None = None) -> PrintOutcome:
    """Print the receipt for a submitted dossier: composed as an image as wide as the station's paper, then
    printed by devices.printer.print_image. Never raises for device trouble.

    ``payment`` defaults to the station's ``[payment]`` account; the fee's VietQR is printed only when
    there is one and the fee is not 0 (an unusable account is logged and left out). The outcome is codes;
    kiosk.device_words.print_outcome says it.
    """
    settings, refusal = usable_settings(config)
    if refusal is not None:
        return refusal
    image = render_receipt_image(receipt, settings.width_px, _usable_payment(config, payment))
    return print_image(config, image, label=f"receipt {receipt.tracking_code}")


class ReceiptPrinter:
    """The station's printing queue. ``request`` records the job and returns at once."""

    def __init__(self, database: str, config: dict, enabled: bool):
        self.database = database
        self.config = config
        self.enabled = enabled  # False: the station has no printer, receipts are shown on screen
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receipt-printer")

    def request(self, conn: sqlite3.Connection, receipt: Receipt, submission_id: str, actor: str) -> int:
        now = datetime.now(timezone.utc).isoformat()
        with write_transaction(conn):
            job = conn.execute(
                "INSERT INTO receipt_prints (submission_id, requested_at, requested_by) VALUES (?, ?, ?)",
                (submission_id, now, actor)).lastrowid
        self._pool.submit(self._print, job, receipt, submission_id, actor)
        return job

    def _print(self, job: int, receipt: Receipt, submission_id: str, actor: str) -> None:
        try:
            outcome = print_receipt(self.config, receipt)
            status, ok = outcome.status.code, outcome.ok
        except Exception as exc:  # a bug must not leave the job "pending" for ever
            log.error("printing failed with %s", type(exc).__name__)
            status, ok = Status.OFFLINE.code, False
        conn = connect(self.database)
        try:
            with write_transaction(conn):
                conn.execute("UPDATE receipt_prints SET finished_at = ?, status = ?, ok = ? WHERE id = ?",
                             (datetime.now(timezone.utc).isoformat(), status, int(ok), job))
                audit.append(conn, actor, "receipt.printed" if ok else "receipt.not_printed", submission_id,
                             {"job": job, "status": status})
        finally:
            conn.close()

    def wait(self, timeout: float = 30) -> None:
        """Let queued jobs finish (tests and shutdown)."""
        self._pool.submit(lambda: None).result(timeout)


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
