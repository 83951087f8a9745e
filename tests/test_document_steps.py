"""The paper steps of the wizard and the counter (issue 15), through the Flask test client: a phone's photo,
a file and the scanner (SANE's test backend) become pages with thumbnails; refused files and a scanner's
trouble get their words and add nothing; pages are turned, taken again and removed; an optional paper is
marked as not held; a required one without a page blocks submit; the dossier carries the PDFs."""
import io
import re
import shutil
import struct
import zlib
from urllib.parse import urlsplit

import pytest
from PIL import Image

from agent import staff
from kiosk.app import create_app
from kiosk.core import documents, dossiers
from kiosk.core.db import connect
from tests.support.paper import page_png, phone_photo, text_page
from tests.support.sane import sane  # noqa: F401  (the fixture)

from .conftest import csrf_token
from tests.support.paper import small_page
from .wizard import add_page, answer_all, submit

PROC = "dang-ky-khai-tu"  # papers: a declaration (form), the death notice (scan, required), the ID (show),
REQUIRED, OPTIONAL = "giay-bao-tu", "uy-quyen"  # a letter of authorisation (scan, optional)
PIN = "246810"


# -- what the world sends ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo() -> bytes:
    """A phone's photo of a dense A4 text page: colour, noisy, sideways with EXIF orientation 6."""
    return phone_photo(text_page())


@pytest.fixture(scope="module")
def scan_150() -> bytes:
    """The same page as a 150 dpi scanner's PNG (quick to clean)."""
    page = text_page()
    return page_png(page.resize((page.width // 2, page.height // 2)), dpi=150)


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A small PNG whose header declares ``width`` × ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


# -- stations -------------------------------------------------------------------------------------------

def _kiosk(tmp_path, sources=("camera", "file"), **extra):
    """A citizen kiosk that takes photos and files (no scanner to look for)."""
    return create_app({"paths": {"data": str(tmp_path / "var")}, "devices": {"scanner": "none"},
                       "documents": {"sources": list(sources)}, **extra})


@pytest.fixture
def app(tmp_path):
    return _kiosk(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def proc(catalog):
    return catalog[PROC]


def _step(proc, document_id=REQUIRED) -> str:
    return f"/p/{proc.slug}/giay-to/{document_id}"


def _at_papers(client, proc) -> str:
    """Answer the questions; the path of the first paper's step."""
    visited = answer_all(client, proc, papers=False)
    assert visited[-1] == _step(proc), visited[-1]
    return visited[-1]


def _pages(app, document_id=REQUIRED) -> list:
    conn = connect(app.config["DATABASE"])
    try:
        (draft_id,) = conn.execute("SELECT id FROM drafts").fetchone()
        return documents.pages_of(conn, draft_id).get(document_id, [])
    finally:
        conn.close()


def _post(client, path: str, page_path: str, **form):
    page = client.get(page_path)
    return client.post(path, data={"csrf_token": csrf_token(page.text), **form})


def _thumbnail(client, step: str, index: int = 0) -> Image.Image:
    page = client.get(step)
    src = re.findall(r'<img class="page-thumbnail" src="([^"]+)"', page.text)[index]
    response = client.get(src.replace("&amp;", "&"))
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.headers["Cache-Control"] == "no-store"
    return Image.open(io.BytesIO(response.data))


def _error_words(html: str) -> str:
    return re.sub(r"\s+", " ", re.search(r'class="error-summary".*?</ul>', html, re.S).group(0))


# -- the steps --------------------------------------------------------------------------------------------

def test_a_phone_photo_becomes_a_page_with_a_thumbnail(client, app, proc, photo):
    *questions, step = answer_all(client, proc, papers=False)
    page = client.get(step)
    paper = next(d for d in proc.documents if d["id"] == REQUIRED)
    assert f"<h1>{paper['vi']}</h1>" in page.text and "Giấy tờ bắt buộc" in page.text
    assert 'accept="image/*" capture="environment"' in page.text  # the camera
    assert 'id="page-file" name="page" accept="image/*" aria-describedby' in page.text  # a file
    assert "Quét trang" not in page.text  # no scanner at this station
    # The paper steps count in "Bước x / y", on the question pages too.
    papers = len(documents.to_capture(proc))
    assert f"Bước {len(questions) + 1} / {len(questions) + papers}" in page.text
    assert f"Bước 1 / {len(questions) + papers}" in client.get(questions[0]).text
    assert len(photo) > app.config["MAX_CONTENT_LENGTH"]  # larger than any other form may post

    response = add_page(client, step, photo, source="camera", name="IMG_0001.jpg")
    assert response.status_code == 303 and urlsplit(response.headers["Location"]).path == step
    [kept] = _pages(app)
    assert kept.source == "camera" and kept.size_bytes <= 160 * 1024
    page = client.get(step)
    assert f'alt="Trang 1 của {paper["vi"]}"' in page.text and 'data-pages="1"' in page.text
    thumbnail = _thumbnail(client, step)
    assert thumbnail.height > thumbnail.width >= 300  # upright (EXIF applied), big enough to check
    # Another session cannot see it.
    src = re.search(r'<img class="page-thumbnail" src="([^"]+)"', page.text).group(1)
    assert app.test_client().get(src.replace("&amp;", "&")).status_code == 404


def test_refused_files_get_their_words_and_add_nothing(client, app, proc, photo):
    step = _at_papers(client, proc)
    refused = [
        (b"Xin chao, day la mot tep van ban.\n", "ghi-chu.txt", "Tệp này không phải là ảnh"),
        (photo[: len(photo) // 2], "IMG_0002.jpg", "Ảnh bị hỏng hoặc chưa được lưu hết"),
        (bomb_png(), "lon.png", "Ảnh quá lớn để xử lý"),
        (b"", "", "Chưa chọn ảnh nào"),
    ]
    for data, name, words in refused:
        response = add_page(client, step, data, name=name)
        assert response.status_code == 422, name
        assert words in _error_words(response.text) and "<title>Lỗi:" in response.text.replace("\n", "")
        assert "Traceback" not in response.text
    assert _pages(app) == []
    client.get("/lang/en")
    english = add_page(client, step, b"not a picture", name="x.txt")
    assert english.status_code == 422 and "This file is not a picture" in english.text


def test_pages_are_turned_taken_again_and_removed(client, app, proc, scan_150):
    step = _at_papers(client, proc)
    assert add_page(client, step, scan_150).status_code == 303
    assert add_page(client, step).status_code == 303  # a second page
    first, second = _pages(app)
    assert _thumbnail(client, step, 0).height > _thumbnail(client, step, 0).width

    assert _post(client, f"{step}/trang/{first.id}", step, action="turn").status_code == 303
    assert _pages(app)[0].quarter_turns == 1
    turned = _thumbnail(client, step, 0)
    assert turned.width > turned.height  # the thumbnail shows the page as it will be sent

    page = client.get(step)
    retaken = client.post(f"{step}/trang/{first.id}/lai", content_type="multipart/form-data", data={
        "csrf_token": csrf_token(page.text), "source": "file", "page": (io.BytesIO(small_page()), "lai.png")})
    assert retaken.status_code == 303
    again = _pages(app)
    assert [p.id for p in again] == [first.id, second.id]  # the same place in the paper
    assert again[0].quarter_turns == 0 and again[0].size_bytes != first.size_bytes

    assert _post(client, f"{step}/trang/{second.id}", step, action="remove").status_code == 303
    assert [p.id for p in _pages(app)] == [first.id]
    assert 'data-pages="1"' in client.get(step).text


def test_an_optional_paper_marked_as_not_held_and_back(client, app, proc):
    step = _at_papers(client, proc)
    assert add_page(client, step).status_code == 303
    going_on = _post(client, step, step, action="continue")
    optional = _step(proc, OPTIONAL)
    assert urlsplit(going_on.headers["Location"]).path == optional
    page = client.get(optional)
    assert "Nộp nếu bạn có giấy tờ này" in page.text and "Tôi không có giấy tờ này" in page.text
    nothing = _post(client, optional, optional, action="continue")  # neither a page nor "not held"
    assert nothing.status_code == 422 and "Tôi không có giấy tờ này" in _error_words(nothing.text)
    assert client.get(f"/p/{proc.slug}/check").headers["Location"] == optional  # not dealt with yet

    assert _post(client, optional, optional, action="not_applicable").status_code == 303
    page = client.get(optional)
    assert "Đã ghi nhận: bạn không có giấy tờ này" in page.text and "Hủy, tôi có giấy tờ này" in page.text
    check = client.get(f"/p/{proc.slug}/check")
    assert check.status_code == 200
    assert f'data-document="{OPTIONAL}">Không có<' in check.text
    assert f'data-document="{REQUIRED}">1 trang<' in check.text
    assert f'href="{optional}?change=1"' in check.text

    assert _post(client, optional, optional, action="undo_not_applicable").status_code == 303
    assert client.get(f"/p/{proc.slug}/check").headers["Location"] == optional
    # A page added to a paper marked "not held" unmarks it.
    _post(client, optional, optional, action="not_applicable")
    assert add_page(client, optional).status_code == 303
    assert f'data-document="{OPTIONAL}">1 trang<' in client.get(f"/p/{proc.slug}/check").text


def test_a_required_paper_without_a_page_blocks_submit_with_its_name(client, app, proc):
    step = _at_papers(client, proc)
    nothing = _post(client, step, step, action="continue")
    assert nothing.status_code == 422 and "Hãy thêm ít nhất một trang" in nothing.text
    assert client.get(f"/p/{proc.slug}/check").headers["Location"] == step
    assert client.get(f"/p/{proc.slug}/submit").headers["Location"] == step

    assert add_page(client, step).status_code == 303
    _post(client, _step(proc, OPTIONAL), _step(proc, OPTIONAL), action="not_applicable")
    consent = client.get(f"/p/{proc.slug}/submit")
    assert consent.status_code == 200
    [kept] = _pages(app)
    _post(client, f"{step}/trang/{kept.id}", step, action="remove")  # removed in another tab
    refused = client.post(f"/p/{proc.slug}/submit", data={"csrf_token": csrf_token(consent.text), "consent": "yes"})
    assert refused.status_code == 422
    paper = next(d for d in proc.documents if d["id"] == REQUIRED)
    assert f"Còn thiếu giấy tờ bắt buộc: {paper['vi']}" in refused.text
    assert f'<a href="{step}">{paper["vi"]}</a>' in refused.text
    with connect(app.config["DATABASE"]) as conn:
        assert conn.execute("SELECT count(*) FROM dossiers").fetchone()[0] == 0


def test_the_submitted_dossier_carries_the_paper(client, app, proc, photo):
    step = _at_papers(client, proc)
    assert add_page(client, step, photo, source="camera").status_code == 303
    assert add_page(client, step).status_code == 303
    response = _post(client, step, step, action="continue")
    optional = urlsplit(response.headers["Location"]).path
    _post(client, optional, optional, action="not_applicable")
    assert urlsplit(_post(client, optional, optional, action="continue").headers["Location"]).path \
        == f"/p/{proc.slug}/check"
    assert submit(client, proc).status_code == 303
    conn = connect(app.config["DATABASE"])
    try:
        (sid,) = conn.execute("SELECT submission_id FROM dossiers").fetchone()
        document = dossiers.open_payload(conn, app.config["PAYLOAD_KEY"], sid)
        [attachment] = document["attachments"]
        assert (attachment["document"], attachment["pages"], attachment["media_type"]) == (REQUIRED, 2,
                                                                                         "application/pdf")
        assert document["documents_not_applicable"] == [OPTIONAL]
        assert "_documents_na" not in document["answers"]
        pdf = documents.pdf_of(conn, app.config["PAYLOAD_KEY"], sid, REQUIRED)
        assert pdf.startswith(b"%PDF") and len(pdf) == attachment["bytes"]
    finally:
        conn.close()


def test_the_upload_limit_is_raised_for_pages_only(client, proc):
    step = _at_papers(client, proc)
    question = f"/p/{proc.slug}/q/{proc.pages[0]['id']}"
    page = client.get(question)
    big = client.post(question, data={"csrf_token": csrf_token(page.text), "x": "a" * 300_000})
    assert big.status_code == 413
    assert add_page(client, step, b"\xff\xd8\xff" + b"\0" * 300_000, name="big.jpg").status_code == 422


def test_a_station_that_captures_nothing_has_no_paper_steps(tmp_path, catalog):
    proc = catalog[PROC]
    client = _kiosk(tmp_path, sources=()).test_client()
    answer_all(client, proc)  # straight from the questions to the check page
    assert client.get(_step(proc)).headers["Location"] == f"/p/{proc.slug}/check"
    assert "data-papers" not in client.get(f"/p/{proc.slug}/check").text
    assert submit(client, proc).status_code == 303


# -- the scanner (SANE's test backend) --------------------------------------------------------------------

needs_scanimage = pytest.mark.skipif(shutil.which("scanimage") is None,
                                     reason="scanimage is missing: scripts/ensure-debian-packages sane-utils")


@needs_scanimage
def test_the_scanner_button_adds_a_page_and_a_jam_gets_its_words(tmp_path, sane, proc):
    sane(test_picture='"Grid"')
    app = create_app({"paths": {"data": str(tmp_path / "var")}, "documents": {"dpi": 150, "sources": "auto", "scan_timeout_seconds": 10}})
    assert app.extensions["scanner"].wait() == "test:0"
    client = app.test_client()
    step = _at_papers(client, proc)
    page = client.get(step)
    assert "Quét trang" in page.text and 'type="file"' not in page.text  # a kiosk: the scanner only
    scanned = client.post(f"{step}/them", data={"csrf_token": csrf_token(page.text), "source": "scanner"})
    assert scanned.status_code == 303, _error_words(scanned.text)
    [kept] = _pages(app)
    assert kept.source == "scanner"
    assert _thumbnail(client, step).height > 300

    for status, words in (("SANE_STATUS_JAMMED", "Giấy bị kẹt trong máy quét"),
                          ("SANE_STATUS_NO_DOCS", "Chưa có giấy trong khay nạp")):
        sane(read_status_code=f'"{status}"')
        for _ in range(4):  # SANE's test backend now and then hangs on a simulated status (tests/test_scanner.py)
            refused = client.post(f"{step}/them", data={"csrf_token": csrf_token(page.text), "source": "scanner"})
            if "Máy quét không trả lời kịp" not in _error_words(refused.text):
                break
        assert refused.status_code == 422 and words in _error_words(refused.text)
        assert len(_pages(app)) == 1


@needs_scanimage
def test_no_scanner_found_means_no_scanner_button(tmp_path, sane, catalog):
    sane(backends="")  # SANE sees nothing
    app = create_app({"paths": {"data": str(tmp_path / "var")}, "station": {"kind": "counter"}})
    assert app.extensions["scanner"].wait() is None
    with app.test_request_context():
        from kiosk import capture
        assert capture.offered() == ["file"]


# -- at the counter ---------------------------------------------------------------------------------------

def test_a_counter_submits_with_a_captured_paper_and_a_shown_id(tmp_path, proc):
    app = create_app({"station": {"kind": "counter", "id": "BD01"}, "paths": {"data": str(tmp_path / "var")},
                      "devices": {"scanner": "none"}})
    conn = connect(app.config["DATABASE"])
    staff.add(conn, "minh", "Minh", "agent", PIN)
    conn.close()
    client = app.test_client()
    login = client.get("/agent/login")
    client.post("/agent/login", data={"csrf_token": csrf_token(login.text), "username": "minh", "secret": PIN})
    answer_all(client, proc)  # a page of the required paper from a file, the optional one not held
    finish = client.get(f"/agent/p/{proc.slug}/finish")
    assert finish.status_code == 200
    assert f'data-document="{REQUIRED}">1 trang<' in finish.text and f'data-document="{OPTIONAL}">Không có<' in finish.text
    assert re.findall(r'name="documents" value="([^"]+)"', finish.text) == ["giay-to-tuy-than"]  # only the ID
    form = {"csrf_token": csrf_token(finish.text), "delivery": "counter", "consent": "yes", "fee": "0"}
    unticked = client.post(f"/agent/p/{proc.slug}/finish", data=form)
    shown = next(d for d in proc.documents if d["id"] == "giay-to-tuy-than")
    assert unticked.status_code == 422 and f"Còn thiếu giấy tờ bắt buộc: {shown['vi']}" in unticked.text
    done = client.post(f"/agent/p/{proc.slug}/finish", data={**form, "documents": ["giay-to-tuy-than"]})
    assert done.status_code == 303, _error_words(done.text)
    conn = connect(app.config["DATABASE"])
    try:
        (sid,) = conn.execute("SELECT submission_id FROM dossiers").fetchone()
        document = dossiers.open_payload(conn, app.config["PAYLOAD_KEY"], sid)
    finally:
        conn.close()
    names = {d["id"]: d["vi"] for d in proc.documents}
    assert document["counter"]["documents_checked"] == [names["to-khai"], names[REQUIRED], names["giay-to-tuy-than"]]
    assert [a["document"] for a in document["attachments"]] == [REQUIRED]
    assert document["documents_not_applicable"] == [OPTIONAL]
