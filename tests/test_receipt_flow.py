"""The receipt after a submit: printed in the background, or shown on screen when it cannot be, and the
dossier safe whatever the printer does."""
import io
import re
import sqlite3

import zxingcpp
from PIL import Image

from tests.support.fake_printer import FakeNetworkPrinter
from kiosk.app import create_app

from .escpos_decoder import decode, printed_image
from .wizard import answer_all, submit


def _submit_one(app, catalog, slug="cap-phieu-ly-lich-tu-phap"):
    client = app.test_client()
    proc = catalog[slug]
    answer_all(client, proc)
    assert submit(client, proc).status_code == 303
    app.extensions["receipts"].wait()
    with client.session_transaction() as session:
        code = session["submitted"]["code"]
    return client, proc, code


def _qr_texts(image):
    return {b.text for b in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)}


def _rows(app, sql):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql).fetchall()


def test_submit_prints_a_receipt_whose_qr_is_the_tracking_url(tmp_path, catalog):
    with FakeNetworkPrinter("ok") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config()})
        client, proc, code = _submit_one(app, catalog)
        page = printed_image(decode(printer.data))
    assert f"http://127.0.0.1:8080/track/{code}" in _qr_texts(page)
    done = client.get("/done")
    assert "Đã in giấy tiếp nhận hồ sơ" in done.text and "receipt-preview" not in done.text
    assert _rows(app, "SELECT requested_by, status, ok FROM receipt_prints") == [("citizen", "ok", 1)]
    assert ("receipt.printed",) in _rows(app, "SELECT action FROM audit_events")


def test_only_the_masked_name_and_number_reach_the_printer(tmp_path, catalog):
    # kiosk/receipt_document.py draws what it is given; kiosk/receipts.py hands it the masked forms only.
    from kiosk.core.db import connect
    from kiosk.receipts import receipt_for

    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    _client, proc, code = _submit_one(app, catalog)
    conn = connect(app.config["DATABASE"])
    (sid,) = conn.execute("SELECT submission_id FROM dossiers WHERE tracking_code = ?", (code,)).fetchone()
    receipt = receipt_for(conn, app.config["PAYLOAD_KEY"], app.config["STATION"], proc, sid, "http://x/track")
    assert receipt.applicant_masked == "Nguyễn V** A*" and receipt.id_masked == "********2345"


def test_paper_out_shows_the_receipt_on_screen_and_keeps_the_dossier(tmp_path, catalog):
    with FakeNetworkPrinter("paper_out") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config()})
        client, proc, code = _submit_one(app, catalog)
    done = client.get("/done")
    assert "Không in được giấy tiếp nhận: Máy in hết giấy." in done.text
    assert "Hồ sơ của bạn vẫn đã được nộp an toàn" in done.text
    assert 'src="/done/receipt.png"' in done.text
    png = client.get("/done/receipt.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert f"http://127.0.0.1:8080/track/{code}" in _qr_texts(Image.open(io.BytesIO(png.data)))
    assert _rows(app, "SELECT status, ok FROM receipt_prints") == [("paper_out", 0)]
    assert _rows(app, "SELECT tracking_code, status FROM dossiers") == [(code, "queued")]
    assert _rows(app, "SELECT state FROM outbox") == [("pending",)]


def test_a_printer_that_is_switched_off_costs_the_citizen_no_wait(tmp_path, catalog):
    from tests.support.fake_printer import unused_port
    app = create_app({"paths": {"data": str(tmp_path / "var")}, "devices": {"printer": "network"},
                      "printer": {"host": "127.0.0.1", "port": unused_port(), "timeout_s": 1.0}})
    client, proc, code = _submit_one(app, catalog)
    assert "Máy in không phản hồi" in client.get("/done").text


def test_while_printing_the_page_asks_again(tmp_path, catalog):
    with FakeNetworkPrinter("ok", answer_delay_s=0.6) as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config()})
        client = app.test_client()
        proc = catalog["dang-ky-khai-tu"]
        answer_all(client, proc)
        submit(client, proc)
        pending = client.get("/done/printing", headers={"HX-Request": "true"})
        assert 'hx-trigger="every 1s"' in pending.text and "Đang in giấy tiếp nhận" in pending.text
        app.extensions["receipts"].wait()
    finished = client.get("/done/printing", headers={"HX-Request": "true"})
    assert "every 1s" not in finished.text and "Đã in" in finished.text


def test_station_without_printer_shows_the_receipt(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    client, proc, code = _submit_one(app, catalog, "dang-ky-khai-tu")
    done = client.get("/done")
    assert "Đây là giấy tiếp nhận hồ sơ của bạn" in done.text and "/done/receipt.png" in done.text
    assert _rows(app, "SELECT COUNT(*) FROM receipt_prints") == [(0,)]
    image = Image.open(io.BytesIO(client.get("/done/receipt.png").data))
    assert re.search(code, " ".join(_qr_texts(image)))


def test_receipt_picture_belongs_to_the_session_that_submitted(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    _submit_one(app, catalog, "dang-ky-khai-tu")
    stranger = app.test_client()
    assert stranger.get("/done/receipt.png").status_code == 404
    assert stranger.get("/done/printing").status_code == 404
