"""The papers of a dossier: pages captured into a draft, one PDF per document at submit, kept until sent.

A procedure lists its papers (``[[documents]]`` in its definition); those of kind ``scan`` are captured
here, page by page, from a scanner, a camera or a file (kiosk/core/pages.py cleans every page first).
Each page is written, sealed and bound to its draft, in its own transaction the moment it is captured, so
a crash or a power cut during capture loses at most the page being scanned; the pages go with their draft
(a trigger deletes them with it). An optional paper ("nếu có") the citizen does not have is marked not
applicable; a required one with no page blocks submit (``missing``).

At submit, inside the dossier's own transaction (kiosk/core/dossiers.py), ``assemble`` wraps each
document's pages in one PDF (lossless: the page images are not re-encoded) and ``keep`` seals it bound to
the dossier; the dossier's document names each PDF's SHA-256, size and page count under ``attachments``,
so the dossier's content hash covers every document's bytes. Sync sends each PDF as a
content-addressed blob before the dossier (sync/worker.py), marks it ``uploaded``, and the PDFs are purged
with the dossier's personal data.

This module owns the ``draft_pages`` and ``dossier_documents`` tables.
"""
import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

from . import pages as pages_mod
from . import drafts, sealing
from .catalog import Procedure
from .db import write_transaction

SOURCES = ("scanner", "camera", "file")
NOT_APPLICABLE_KEY = "_documents_na"  # in a draft's answers: ids of optional papers the citizen does not have
MAX_PAGES_PER_DOCUMENT = 20
MAX_PAGES_PER_DRAFT = 60
PDF = "application/pdf"


class TooManyPages(ValueError):
    """A document (or the whole draft) already has as many pages as a dossier may carry."""


@dataclass(frozen=True)
class DraftPage:
    id: int
    document_id: str
    position: int
    quarter_turns: int
    size_bytes: int
    source: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _bound(draft_id: str, document_id: str) -> str:
    return f"page:{draft_id}:{document_id}"


def to_capture(procedure: Procedure) -> list[dict]:
    """The procedure's papers that are captured (kind ``scan``), in the order of its list."""
    return [d for d in procedure.documents if d.get("kind", "scan") == "scan"]


# -- a draft's pages ------------------------------------------------------------------------------------

def add_page(conn: sqlite3.Connection, key: bytes, draft_id: str, document_id: str, page: pages_mod.Page,
             source: str) -> int | None:
    """Keep one clean page as the last of its document; its id, or None when the draft is gone.
    Durable when it returns. Raises TooManyPages past the limits."""
    assert source in SOURCES, source
    sealed = sealing.seal_bytes(key, page.data, _bound(draft_id, document_id))
    with write_transaction(conn):
        if not drafts.exists(conn, draft_id):
            return None
        in_document, in_draft = conn.execute(
            "SELECT count(*) FILTER (WHERE document_id = ?), count(*) FROM draft_pages WHERE draft_id = ?",
            (document_id, draft_id)).fetchone()
        if in_document >= MAX_PAGES_PER_DOCUMENT or in_draft >= MAX_PAGES_PER_DRAFT:
            raise TooManyPages(f"{in_document} pages in the document, {in_draft} in the draft")
        (position,) = conn.execute(
            "SELECT coalesce(max(position), 0) + 1 FROM draft_pages WHERE draft_id = ? AND document_id = ?",
            (draft_id, document_id)).fetchone()
        return conn.execute(
            "INSERT INTO draft_pages (draft_id, document_id, position, page_sealed, media_type, mode, dpi, "
            "size_bytes, source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (draft_id, document_id, position, sealed, page.media_type, page.mode, page.dpi, page.size_bytes,
             source, _now())).lastrowid


def pages_of(conn: sqlite3.Connection, draft_id: str) -> dict[str, list[DraftPage]]:
    """The draft's pages by document id, each document's in order."""
    found: dict[str, list[DraftPage]] = {}
    for row in conn.execute(
            "SELECT id, document_id, position, quarter_turns, size_bytes, source FROM draft_pages "
            "WHERE draft_id = ? ORDER BY document_id, position", (draft_id,)):
        found.setdefault(row[1], []).append(DraftPage(*row))
    return found


def page_image(conn: sqlite3.Connection, key: bytes, draft_id: str, page_id: int) -> tuple[bytes, int] | None:
    """(the page's image bytes as captured, its clockwise quarter turns), or None."""
    row = conn.execute("SELECT document_id, page_sealed, quarter_turns FROM draft_pages "
                       "WHERE id = ? AND draft_id = ?", (page_id, draft_id)).fetchone()
    if row is None:
        return None
    return sealing.open_bytes(key, row[1], _bound(draft_id, row[0])), row[2]


def turn_page(conn: sqlite3.Connection, draft_id: str, page_id: int, quarter_turns: int = 1) -> bool:
    """Turn a page clockwise (applied to the image once, at submit)."""
    with write_transaction(conn):
        return conn.execute("UPDATE draft_pages SET quarter_turns = (quarter_turns + ?) % 4 "
                            "WHERE id = ? AND draft_id = ?", (quarter_turns % 4, page_id, draft_id)).rowcount == 1


def remove_page(conn: sqlite3.Connection, draft_id: str, page_id: int) -> bool:
    with write_transaction(conn):
        return conn.execute("DELETE FROM draft_pages WHERE id = ? AND draft_id = ?",
                            (page_id, draft_id)).rowcount == 1


def replace_page(conn: sqlite3.Connection, key: bytes, draft_id: str, page_id: int, page: pages_mod.Page,
                 source: str) -> bool:
    """Retake: the new page takes the old one's place (and starts upright)."""
    assert source in SOURCES, source
    row = conn.execute("SELECT document_id FROM draft_pages WHERE id = ? AND draft_id = ?",
                       (page_id, draft_id)).fetchone()
    if row is None:
        return False
    sealed = sealing.seal_bytes(key, page.data, _bound(draft_id, row[0]))
    with write_transaction(conn):
        return conn.execute(
            "UPDATE draft_pages SET page_sealed = ?, media_type = ?, mode = ?, dpi = ?, size_bytes = ?, "
            "quarter_turns = 0, source = ?, added_at = ? WHERE id = ? AND draft_id = ?",
            (sealed, page.media_type, page.mode, page.dpi, page.size_bytes, source, _now(), page_id,
             draft_id)).rowcount == 1


# -- not applicable, missing ----------------------------------------------------------------------------

def not_applicable(answers: dict) -> set[str]:
    return set(answers.get(NOT_APPLICABLE_KEY) or ())


def with_not_applicable(answers: dict, document_id: str, on: bool) -> dict:
    """The draft's answers with an optional paper marked (or no longer marked) as not applicable."""
    marked = not_applicable(answers)
    marked = marked | {document_id} if on else marked - {document_id}
    return {**answers, NOT_APPLICABLE_KEY: sorted(marked)}


def missing(procedure: Procedure, pages: dict[str, list], carried: set[str] = frozenset()) -> list[dict]:
    """The required papers to capture that have no page (nor one ``carried`` from the dossier a correction
    replaces), in the order of the list: what blocks submit."""
    return [d for d in to_capture(procedure) if d["required"] and not pages.get(d["id"]) and d["id"] not in carried]


def dealt_with(paper: dict, answers: dict, pages: dict[str, list], carried: set[str] = frozenset()) -> bool:
    """The paper has a page, is carried from the dossier a correction replaces, or (an optional one) the
    citizen said they do not have it."""
    return (bool(pages.get(paper["id"])) or paper["id"] in carried
            or (not paper["required"] and paper["id"] in not_applicable(answers)))


def unanswered(procedure: Procedure, answers: dict, pages: dict[str, list],
               carried: set[str] = frozenset()) -> list[dict]:
    """The papers the citizen has not dealt with yet, in the order of the list: the wizard's next step."""
    return [d for d in to_capture(procedure) if not dealt_with(d, answers, pages, carried)]


# -- at submit ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assembled:
    """One document's PDF, made at submit, not yet written."""
    document_id: str
    position: int
    name: str
    pdf: bytes
    pages: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.pdf).hexdigest()

    def attachment(self) -> dict:
        """What the dossier's document says of it (its content hash covers these bytes)."""
        return {"document": self.document_id, "name": self.name, "sha256": self.sha256,
                "bytes": len(self.pdf), "pages": self.pages, "media_type": PDF}


def assemble(conn: sqlite3.Connection, key: bytes, draft_id: str, procedure: Procedure,
             marked: set[str] = frozenset(), carry_from: str | None = None) -> list[Assembled]:
    """Inside the submit's transaction, before the draft is taken: one PDF per captured document, in the
    order of the procedure's list. A correction (``carry_from``: the dossier it replaces) keeps that
    dossier's PDF of a paper it captured no new page for and did not mark not applicable (``marked``)."""
    names = {d["id"]: d for d in to_capture(procedure)}
    by_document: dict[str, list] = {}
    for row in conn.execute("SELECT document_id, page_sealed, media_type, mode, dpi, quarter_turns "
                            "FROM draft_pages WHERE draft_id = ? ORDER BY position", (draft_id,)):
        if row[0] in names:  # a paper the procedure no longer lists is not sent
            by_document.setdefault(row[0], []).append(row)
    carried = {}
    if carry_from:
        for row in conn.execute("SELECT document_id, pages, pdf_sealed FROM dossier_documents "
                                "WHERE submission_id = ? AND pdf_sealed IS NOT NULL", (carry_from,)):
            if row[0] in names and row[0] not in by_document and row[0] not in marked:
                carried[row[0]] = (sealing.open_bytes(key, row[2], f"{carry_from}/{row[0]}"), row[1])
    built = []
    for position, document_id in enumerate(names, 1):
        if document_id in by_document:
            page_list = [pages_mod.turned(pages_mod.stored_page(
                sealing.open_bytes(key, r[1], _bound(draft_id, document_id)), r[2], r[3], r[4]), r[5])
                for r in by_document[document_id]]
            pdf, count = pages_mod.pages_to_pdf(page_list), len(page_list)
        elif document_id in carried:
            pdf, count = carried[document_id]
        else:
            continue
        built.append(Assembled(document_id, position, names[document_id]["vi"], pdf, count))
    return built


def keep(conn: sqlite3.Connection, key: bytes, submission_id: str, built: list[Assembled]) -> None:
    """Write the dossier's PDFs, sealed and bound to it, in the submit's transaction (after its row)."""
    for item in built:
        conn.execute(
            "INSERT INTO dossier_documents (submission_id, document_id, position, sha256, size_bytes, pages, "
            "pdf_sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (submission_id, item.document_id, item.position, item.sha256, len(item.pdf), item.pages,
             sealing.seal_bytes(key, item.pdf, f"{submission_id}/{item.document_id}")))


def copy_to_new_dossier(conn: sqlite3.Connection, key: bytes, old_id: str, new_id: str) -> None:
    """The same PDFs under a new submission id (a dossier reissued under a new tracking code carries the
    same ``attachments``), in the caller's transaction; the central already holds what was uploaded."""
    for row in conn.execute("SELECT document_id, position, sha256, size_bytes, pages, pdf_sealed, uploaded_at "
                            "FROM dossier_documents WHERE submission_id = ?", (old_id,)).fetchall():
        sealed = row[5] and sealing.seal_bytes(key, sealing.open_bytes(key, row[5], f"{old_id}/{row[0]}"),
                                               f"{new_id}/{row[0]}")
        conn.execute("INSERT INTO dossier_documents (submission_id, document_id, position, sha256, size_bytes, "
                     "pages, pdf_sealed, uploaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (new_id, row[0], row[1], row[2], row[3], row[4], sealed, row[6]))


# -- a dossier's documents ------------------------------------------------------------------------------

def of_dossier(conn: sqlite3.Connection, submission_id: str) -> list[sqlite3.Row]:
    """The dossier's documents in the order of the procedure's list: ``document_id``, ``sha256``,
    ``size_bytes``, ``pages``, ``uploaded_at``, ``held`` (1 while the PDF is still at the station)."""
    return conn.execute("SELECT document_id, sha256, size_bytes, pages, uploaded_at, pdf_sealed IS NOT NULL AS held "
                        "FROM dossier_documents WHERE submission_id = ? ORDER BY position",
                        (submission_id,)).fetchall()


def pdf_of(conn: sqlite3.Connection, key: bytes, submission_id: str, document_id: str) -> bytes | None:
    """One document's PDF, checked against the hash the dossier names; None once purged or unknown."""
    row = conn.execute("SELECT pdf_sealed, sha256 FROM dossier_documents WHERE submission_id = ? AND document_id = ?",
                       (submission_id, document_id)).fetchone()
    if row is None or row[0] is None:
        return None
    pdf = sealing.open_bytes(key, row[0], f"{submission_id}/{document_id}")
    if hashlib.sha256(pdf).hexdigest() != row[1]:
        raise ValueError("a document's PDF does not match the hash its dossier names")
    return pdf


def unsent(conn: sqlite3.Connection, submission_id: str) -> list[sqlite3.Row]:
    """The dossier's documents the central has not confirmed yet (``document_id``, ``sha256``)."""
    return conn.execute("SELECT document_id, sha256 FROM dossier_documents WHERE submission_id = ? "
                        "AND uploaded_at IS NULL ORDER BY position", (submission_id,)).fetchall()


def mark_uploaded(conn: sqlite3.Connection, sha256: str) -> int:
    """The central holds the blob ``sha256``: every document with those bytes is sent (two dossiers may
    carry the same PDF, a correction its predecessor's)."""
    with write_transaction(conn):
        return conn.execute("UPDATE dossier_documents SET uploaded_at = ? WHERE sha256 = ? AND uploaded_at IS NULL",
                            (_now(), sha256)).rowcount


def mark_unsent(conn: sqlite3.Connection, submission_ids: list[str]) -> int:
    """The central may no longer hold these dossiers' blobs (it was restored from a backup): send again."""
    total = 0
    for start in range(0, len(submission_ids), 500):
        chunk = submission_ids[start:start + 500]
        total += conn.execute(f"UPDATE dossier_documents SET uploaded_at = NULL WHERE submission_id IN "
                              f"({','.join('?' * len(chunk))})", chunk).rowcount
    return total


def purge(conn: sqlite3.Connection, submission_id: str) -> None:
    """Drop the dossier's PDFs (personal data) in the caller's transaction; names, hashes and sizes stay."""
    conn.execute("UPDATE dossier_documents SET pdf_sealed = NULL WHERE submission_id = ?", (submission_id,))


def pending_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of documents still to send (kept, not confirmed uploaded), for the staff's sync panel: the
    count triggers keep in ``document_tally`` (kiosk/core/migrations.py, m017), not a sum over the rows."""
    (total,) = conn.execute("SELECT unsent_bytes FROM document_tally").fetchone()
    return total
