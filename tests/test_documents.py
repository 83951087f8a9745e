"""A dossier's papers in the station's database (kiosk/core/documents.py): pages kept sealed the moment they
are captured, one PDF per document at submit inside the dossier's transaction, the dossier's content hash
covering every PDF, purged with the dossier. Pages are made as the world makes them (tests/support/paper.py)
and the PDFs are read back with pypdf's independent parser, not with the code that wrote them."""
import hashlib
import io
import json

import pytest
from pypdf import PdfReader

from kiosk.core import db, documents, dossiers, drafts, sealing
from kiosk.core.catalog import load_catalog
from kiosk.core.dossiers import canonical_json
from kiosk.core.pages import clean_page
from tests.support.paper import page_png, phone_photo, text_page

STATION = {"id": "K01", "timezone": "Asia/Ho_Chi_Minh"}


@pytest.fixture(scope="module")
def page():
    return clean_page(page_png(text_page()))


@pytest.fixture(scope="module")
def photo_page():
    return clean_page(phone_photo(text_page()))


@pytest.fixture
def conn(tmp_path):
    db.migrate(tmp_path / "station.sqlite3")
    connection = db.connect(tmp_path / "station.sqlite3")
    yield connection
    connection.close()


KEY = bytes(range(32))
PROC = load_catalog()["dang-ky-khai-tu"]  # papers: the form, the death notice (required), the ID shown, a proxy letter


def _submit(conn, draft_id, answers=None, **kw):
    return dossiers.submit(conn, key=KEY, station=STATION, channel="kiosk", procedure=PROC,
                           answers=answers or {"ho_ten": "x"}, draft_id=draft_id, **kw)


def test_only_papers_to_capture_are_steps_and_a_required_one_without_pages_is_missing():
    kinds = {d["id"]: d["kind"] for d in PROC.documents}
    assert kinds == {"to-khai": "form", "giay-bao-tu": "scan", "giay-to-tuy-than": "show", "uy-quyen": "scan"}
    assert [d["id"] for d in documents.to_capture(PROC)] == ["giay-bao-tu", "uy-quyen"]
    assert [d["id"] for d in documents.missing(PROC, {})] == ["giay-bao-tu"]
    assert [d["id"] for d in documents.unanswered(PROC, {}, {})] == ["giay-bao-tu", "uy-quyen"]
    answers = documents.with_not_applicable({}, "uy-quyen", True)
    assert [d["id"] for d in documents.unanswered(PROC, answers, {})] == ["giay-bao-tu"]
    assert documents.not_applicable(documents.with_not_applicable(answers, "uy-quyen", False)) == set()


def test_pages_are_sealed_kept_in_order_turned_removed_and_go_with_their_draft(conn, page, photo_page):
    draft_id = drafts.create(conn, KEY, PROC.slug, PROC.version)
    first = documents.add_page(conn, KEY, draft_id, "giay-bao-tu", page, "scanner")
    second = documents.add_page(conn, KEY, draft_id, "giay-bao-tu", photo_page, "camera")
    kept = documents.pages_of(conn, draft_id)["giay-bao-tu"]
    assert [p.id for p in kept] == [first, second] and [p.source for p in kept] == ["scanner", "camera"]
    # Sealed at rest: the page's bytes are nowhere in the database file in the clear.
    raw = conn.execute("SELECT page_sealed FROM draft_pages WHERE id = ?", (first,)).fetchone()[0]
    assert page.data[:64] not in raw and raw[:2] == b"B1"
    assert documents.page_image(conn, KEY, draft_id, first) == (page.data, 0)
    assert documents.page_image(conn, KEY, "another-draft", first) is None
    assert documents.turn_page(conn, draft_id, first) and documents.turn_page(conn, draft_id, first, 3)
    assert documents.page_image(conn, KEY, draft_id, first)[1] == 0
    assert documents.turn_page(conn, draft_id, second)
    assert documents.remove_page(conn, draft_id, first)
    assert [p.id for p in documents.pages_of(conn, draft_id)["giay-bao-tu"]] == [second]
    drafts.delete(conn, draft_id)
    assert conn.execute("SELECT count(*) FROM draft_pages").fetchone()[0] == 0
    assert documents.add_page(conn, KEY, draft_id, "giay-bao-tu", page, "file") is None


def test_submit_makes_one_pdf_per_document_named_in_the_dossier_and_covered_by_its_hash(conn, page, photo_page):
    draft_id = drafts.create(conn, KEY, PROC.slug, PROC.version)
    documents.add_page(conn, KEY, draft_id, "giay-bao-tu", page, "scanner")
    turned = documents.add_page(conn, KEY, draft_id, "giay-bao-tu", photo_page, "camera")
    documents.turn_page(conn, draft_id, turned)  # the second page is turned a quarter clockwise
    submitted = _submit(conn, draft_id, not_applicable={"uy-quyen"})
    sid = submitted.submission_id
    document = dossiers.open_payload(conn, KEY, sid)
    (attachment,) = document["attachments"]
    assert document["documents_not_applicable"] == ["uy-quyen"]
    pdf = documents.pdf_of(conn, KEY, sid, "giay-bao-tu")
    assert attachment == {"document": "giay-bao-tu", "name": PROC.documents[1]["vi"], "pages": 2,
                          "sha256": hashlib.sha256(pdf).hexdigest(), "bytes": len(pdf),
                          "media_type": "application/pdf"}
    row = conn.execute("SELECT payload_sha256 FROM dossiers WHERE submission_id = ?", (sid,)).fetchone()
    assert row[0] == hashlib.sha256(canonical_json(document)).hexdigest()
    # pypdf reads two A4 pages; the first embeds the scanner's page bytes unchanged (lossless wrap); the
    # turned one is landscape-shaped content turned to portrait.
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 2
    assert page.data in pdf  # the page's JPEG bytes as they are, not decoded and encoded again
    width, height = reader.pages[1].images[0].image.size
    assert width > height  # the photo page was portrait; turned a quarter it is landscape
    for p in reader.pages:
        w, h = float(p.mediabox.width), float(p.mediabox.height)
        assert {round(w / 72 * 25.4), round(h / 72 * 25.4)} == {210, 297}
    # The draft and its pages are gone with the submit; a second press finds nothing.
    assert conn.execute("SELECT count(*) FROM draft_pages").fetchone()[0] == 0
    assert _submit(conn, draft_id) is None
    assert conn.execute("SELECT count(*) FROM dossier_documents").fetchone()[0] == 1


def test_a_dossier_without_papers_names_none_and_its_document_is_as_before(conn):
    draft_id = drafts.create(conn, KEY, PROC.slug, PROC.version)
    sid = _submit(conn, draft_id).submission_id
    document = dossiers.open_payload(conn, KEY, sid)
    assert "attachments" not in document and "documents_not_applicable" not in document
    assert documents.of_dossier(conn, sid) == []


def test_sending_purging_and_a_reissue_keep_the_pdf_bound_to_its_dossier(conn, page):
    draft_id = drafts.create(conn, KEY, PROC.slug, PROC.version)
    documents.add_page(conn, KEY, draft_id, "giay-bao-tu", page, "file")
    sid = _submit(conn, draft_id).submission_id
    (unsent,) = documents.unsent(conn, sid)
    assert documents.pending_bytes(conn) == documents.of_dossier(conn, sid)[0]["size_bytes"]
    # Copied onto another dossier's row, the sealed PDF does not open.
    sealed = conn.execute("SELECT pdf_sealed FROM dossier_documents").fetchone()[0]
    with pytest.raises(Exception):
        sealing.open_bytes(KEY, sealed, f"other/{unsent['document_id']}")
    assert documents.mark_uploaded(conn, unsent["sha256"]) == 1 and documents.unsent(conn, sid) == []
    with db.write_transaction(conn):
        assert documents.mark_unsent(conn, [sid]) == 1
    # Reissued under a new code (the central held the old code): the same PDF, bound to the new dossier.
    new_code = dossiers.reissue_with_new_code(conn, KEY, sid)
    new = dossiers.find_by_tracking_code(conn, new_code)
    assert documents.pdf_of(conn, KEY, new["submission_id"], "giay-bao-tu") == documents.pdf_of(conn, KEY, sid, "giay-bao-tu")
    assert dossiers.open_payload(conn, KEY, new["submission_id"])["attachments"][0]["sha256"] == unsent["sha256"]
    with db.write_transaction(conn):
        dossiers.purge_payload(conn, sid)
    assert documents.pdf_of(conn, KEY, sid, "giay-bao-tu") is None
    assert documents.of_dossier(conn, sid)[0]["held"] == 0
    with pytest.raises(Exception, match="immutable"):
        with db.write_transaction(conn):
            conn.execute("UPDATE dossier_documents SET sha256 = 'x'")


def test_a_correction_keeps_the_papers_it_did_not_capture_again(conn, page, photo_page):
    draft_id = drafts.create(conn, KEY, PROC.slug, PROC.version)
    documents.add_page(conn, KEY, draft_id, "giay-bao-tu", page, "scanner")
    documents.add_page(conn, KEY, draft_id, "uy-quyen", page, "scanner")
    old = _submit(conn, draft_id).submission_id
    correction = drafts.create(conn, KEY, PROC.slug, PROC.version)
    documents.add_page(conn, KEY, correction, "uy-quyen", photo_page, "camera")
    assert documents.missing(PROC, documents.pages_of(conn, correction), carried={"giay-bao-tu"}) == []
    new = _submit(conn, correction, supersedes=old).submission_id
    by_id = {a["document"]: a for a in dossiers.open_payload(conn, KEY, new)["attachments"]}
    old_by_id = {a["document"]: a for a in dossiers.open_payload(conn, KEY, old)["attachments"]}
    assert by_id["giay-bao-tu"]["sha256"] == old_by_id["giay-bao-tu"]["sha256"]
    assert by_id["uy-quyen"]["sha256"] != old_by_id["uy-quyen"]["sha256"]


def test_too_many_pages_are_refused(conn, page, monkeypatch):
    monkeypatch.setattr(documents, "MAX_PAGES_PER_DOCUMENT", 2)
    draft_id = drafts.create(conn, KEY, PROC.slug, PROC.version)
    for _ in range(2):
        documents.add_page(conn, KEY, draft_id, "giay-bao-tu", page, "file")
    with pytest.raises(documents.TooManyPages):
        documents.add_page(conn, KEY, draft_id, "giay-bao-tu", page, "file")
    assert json.dumps([p.position for p in documents.pages_of(conn, draft_id)["giay-bao-tu"]]) == "[1, 2]"
